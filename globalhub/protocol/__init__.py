"""The wire protocol shared by the manager and the agents: event types, versions, bundles, Kafka codec.

Nothing here imports Django or needs a database (a test keeps it that way).
"""
