"""The lab: where Portico runs for real on one machine, and the kits its tests share.

    controlplane  the real Kubernetes control plane: binaries built from Go modules, etcd +
                  kube-apiserver + controller-manager + scheduler on loopback, PKI, the Helm
                  CLI, a TCP relay for cutting connections
    topology      Lab: network namespaces as nodes, a router and a client; starts the
                  components against the control plane
    nodeagent     the kubelet stand-in: one per node namespace, registers the Node, renews
                  its Lease, runs the pods bound to it as processes (``labkit``: what a Lab
                  calls to start agents and route pod CIDRs)
    netns, probe, backend, frr, failover, demo
                  namespace plumbing, probes, HTTP backends, the FRR router, failover runs,
                  the README demo (``python -m lab.demo``)
    emulator      a small API server for faults a real one cannot be asked for (409/5xx
                  storms, slow answers); its semantics are its own (``emulator.kinds``)
    gateway_conformance
                  the upstream Gateway API conformance suite against Portico on the lab
                  cluster (``make conformance``); ``dnsstub`` stands in for its CoreDNS pod
    fakeclock, ingress_kit, bgp_kit
                  kits for tests and benchmarks: a clock that moves when told, Ingress objects
                  and a HAProxy harness, BGP fixtures

Tests and benchmarks import the lab; the product never does, and the lab never imports
``tests`` (import contracts in ``.importlinter``).
"""
