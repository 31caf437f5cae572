"""BGP announcer: an exabgp child process driven over its API pipe (I/O shell of core/bgp*)."""
