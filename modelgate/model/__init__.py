"""The SavedModel as files: where it is, what its protobuf declares, what its graph may execute (the op
scan), its variables, its Keras flavors and TF Serving warm-up records. Static readers run in the parent's
children as well as in the parent; nothing here imports TensorFlow at module level.
"""
