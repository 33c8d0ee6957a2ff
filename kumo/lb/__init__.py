"""Load-balancer health monitoring: one agent per router checks its pools' members, from a namespace plugged
into the router, and writes what it finds to the member_status table (kumo.topology.lbstatus)."""
