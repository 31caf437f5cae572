"""Per-node announcer: owner election, layer 2 (ARP/NDP with scapy), BGP (exabgp)."""
