"""globalhub: the manager (Django project) and the wire protocol it shares with the agents."""
