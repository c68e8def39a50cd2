"""The inline SIP firewall: a stateless proxy that runs the detection engine and a policy on
every message between an untrusted side and a protected upstream (issue 4)."""
