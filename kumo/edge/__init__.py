"""The edge: eBGP sessions of uplink router ports, run by the agent of the host the uplink is bound to.

  exabgp.py     a peer's ExaBGP configuration, environment and API commands
  messages.py   ExaBGP's JSON (neighbor states, OPEN, UPDATE, NOTIFICATION) as typed events
  bridge.py     the helper ExaBGP runs: its API stream to and from the agent, over a Unix socket
  namespace.py  the uplink's speaker namespace: a veth holding the port's address and MAC
  speaker.py    one ExaBGP child process: start, commands, events, stop
  session.py    one peer's session as the operator sees it: FSM state, prefixes, errors, maximum-prefix
  networks.py   what a router advertises: its networks, and its floating IPs when asked
  mirror.py     the edge's state tables in the store, written as the difference from what is there
  manager.py    which sessions this host runs, learned routes in the store, networks advertised
The datapath hands the uplink's BGP and ARP to the speaker's veth (kumo/datapath/bpf/lib/speakers.h).
"""
