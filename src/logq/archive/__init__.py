"""The archive: closed segments kept in an object store (tiered storage).

`store` is the object store interface, `segment_object` the layout of one
archived segment, `names` the object names, `reconcile` the removal of
objects no manifest references.
"""
