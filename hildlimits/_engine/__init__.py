"""The engine: Gaussian expectations, symbolic algebra, code printing, the runtime of
generated code, activations and the safe expression parser."""
