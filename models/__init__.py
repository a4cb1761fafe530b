"""Training, export and evaluation of wbcscope's models (development only, never imported at run time).

Needs the ``train`` extra (TensorFlow CPU); the shipped ``*.tflite`` files run with ``ai_edge_litert`` alone.
"""
