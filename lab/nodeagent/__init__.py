"""The lab's node agent: a kubelet stand-in that really runs the pods bound to its node.

One agent per lab node, inside the node's network namespace::

    python -m lab.nodeagent --node node1 --kubeconfig node1.kubeconfig \\
        --node-ip 192.0.2.11 --node-ip 2001:db8:a::11 --pod-cidr 198.18.1.0/24 \\
        --state-dir /tmp/.../node1

Pure decisions (no I/O; unit-tested with plain data)::

    images     the one table: container image -> local command (ENTRYPOINT/CMD rules)
    plan       pod spec -> launch plan (argv, env incl. downward API and Secret/ConfigMap
               references, user/groups/capabilities, volume mounts) or a failure reason
    probes     probe specs and the prober's threshold state machine
    lifecycle  restart policy, crash-loop back-off, exit classification
    status     container states -> pod phase, conditions, containerStatuses; the patch
    node       Node object/status, node Lease, pod address assignment
    caps       capability names and numbers

The thin I/O shell::

    agent      the loop: informer on the node's pods, sync, status writes, heartbeat
    kube       API calls with the node's identity (the Node authorizer applies)
    runtime    processes (through the launcher), signals, probes, the ledger
    podnet     bridge, per-pod network namespaces, masquerade; routes between nodes
    launch     the process that becomes a container (namespaces, mounts, credentials, exec)

For the lab (``labkit``): node credentials, the agent's command line, pod CIDRs per node
(198.18.K.0/24, 2001:db8:f0:K::/64) and the routes between them — what a Lab with node
agents calls.

What is applied and what is not (Linux, no container engine):

- applied: command/args/env (``$(VAR)``, fieldRef, resourceFieldRef, Secret/ConfigMap keys,
  envFrom), the ``kubernetes`` Service variables (``--api-host/--api-port`` override them:
  until kube-proxy runs in the lab the ClusterIP does not forward), the ServiceAccount token
  (TokenRequest bound to the pod) with ``ca.crt`` and ``namespace`` through the pod's own
  projected volume at ``/var/run/secrets/kubernetes.io/serviceaccount`` in a private mount
  namespace (``automountServiceAccountToken: false`` means the API server added no such
  volume), emptyDir/configMap/secret/projected/downwardAPI volumes, runAsUser/runAsGroup/
  supplementalGroups/fsGroup/runAsNonRoot, capabilities (bounding set: runtime default minus
  drop plus add) and allowPrivilegeEscalation (no_new_privs), hostNetwork or a network
  namespace of the pod's own with a UTS name, probes, restart policy with back-off, graceful
  termination, logs under the state directory;
- not applied: resource limits (no cgroups), readOnlyRootFilesystem, seccomp, SELinux,
  AppArmor, PID/IPC namespaces, pod sysctls, hostPath and persistent volumes, subPath, init
  and ephemeral containers, lifecycle hooks, image pulls (there are no images), service links
  other than ``kubernetes``, DNS (no resolv.conf of the cluster).
"""
