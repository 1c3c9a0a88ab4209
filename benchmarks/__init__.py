"""The checkout's tools: the operator microbenchmark (:mod:`benchmarks.ops`), the GPU check
(:mod:`benchmarks.gpu_check`) and the training-job selection and data-loading scripts.

A package so that the tools and their tests import each other by name: run them from the checkout root
(``python -m benchmarks.ops``, ``python -m benchmarks.gpu_check``) or anywhere after the editable install
(``pip install -e .`` maps ``benchmarks`` to this folder). They are not shipped in wheels: they benchmark and check
a checkout, and a top-level ``benchmarks`` package in site-packages would collide with other projects'.
"""
