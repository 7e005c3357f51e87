"""The hub's Kubernetes API as the agent's inventory source: list and watch, then write into the inventory.

* :mod:`~agent_tasks.kube.resources`: what is read (ManagedCluster, Policy, ClusterClaim);
* :mod:`~agent_tasks.kube.views`: how an object becomes inventory entries (pure, no I/O);
* :mod:`~agent_tasks.kube.api`: the connection (in-cluster or kubeconfig), lists and watches, typed errors;
* :mod:`~agent_tasks.kube.writer`: writes entries into the inventory, skipping what did not change, reconciling;
* :mod:`~agent_tasks.kube.watch`: one list-watch loop per resource (resume, relist on 410, backoff);
* :mod:`~agent_tasks.kube.status`: the source's state in Redis, for ``ctl status`` and the metrics.

The process is ``python -m agent_tasks.watch_kube``.
"""
