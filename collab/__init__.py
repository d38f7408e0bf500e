"""collab: the real-time document engine of the construction ERP.

Knows documents, versions, strategies, merges and stores; knows nothing of sockets.
"""
