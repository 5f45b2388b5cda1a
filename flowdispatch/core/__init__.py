"""The model: what a workflow is, with nothing that runs it.

Keys, the traversal of nested arguments, nodes, ops, graphs, results and
their states, the callback interface, the retry policy, and the JSON form of
a graph (with the allow-list that guards loading it).
"""
