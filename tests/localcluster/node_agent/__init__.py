"""A test node agent: the stand-in for kubelet + a container runtime in the local cluster.

It registers Nodes, renews their Leases and runs the Pods bound to them as local processes, each
pod in its own network namespace with an /etc/hosts that resolves headless-service DNS names.
Run it as root: `python -m localcluster.node_agent --kubeconfig K --node N --workdir D`.
"""
