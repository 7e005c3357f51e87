"""The agent side of globalhub: one set of processes per hub (Celery worker, beat, spec listener, simulator).

``celery -A agent_tasks`` finds the app in :mod:`agent_tasks.celery`.
"""
