"""A real Kubernetes control plane on this machine: binaries built from Go modules
(``lab.controlplane.binaries``), a CA and credentials (``pki``), and etcd + kube-apiserver +
controller-manager + scheduler started in one call (``cluster``)."""
