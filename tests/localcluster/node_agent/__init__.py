"""A test node agent: the stand-in for kubelet + a container runtime in the local cluster.

It registers Nodes (cpu, memory, pods, nvidia.com/gpu), renews their Leases and runs the Pods bound
to them as local processes of this Python environment, each pod in its own network namespace on
the `kibr0` bridge (10.244.0.1/16) with an /etc/hosts that resolves headless-service DNS names.
Needs root. Container logs go to `<workdir>/logs/<namespace>_<pod>_<container>.log`.

    python -m localcluster.node_agent --kubeconfig K --node N [--node N2] --workdir D \
        --api-port P [--api-host 10.244.0.1] [--cpu 8] [--memory 32Gi] [--gpus 0] \
        [--entrypoint IMAGE_NAME='["cmd"]'] [--env K=V] [--label K=V] [--backoff-base 10]
    python -m localcluster.node_agent --cleanup --workdir D [--node N]   # after a crash

From Python: `launcher.NodeAgentProcess(...).start()`, `.pause()`, `.resume()`, `.kill()`,
`.stop()`, `.container_log(ns, pod, container)`, and `launcher.pod_processes(node, uid)`.
"""
