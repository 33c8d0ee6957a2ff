"""The per-host agent: follows the ports bound to its host, serves upcalls (wildcard table, else simulate),
installs kernel flows and keeps them right as the topology and learned state change. (`kumo.agent.agent`
holds the Agent; nothing is imported here, so that the CLI starts without the datapath's libraries.)"""
