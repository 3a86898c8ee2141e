"""The SDK versions we instrument, read by BaseInstrumentor before patching."""

# 1.26.0 is the first openai release with `stream_options`, which is how exact
# usage for streams is obtained; below it we would have nothing to add.
_instruments = ("openai >= 1.26.0, < 4",)
