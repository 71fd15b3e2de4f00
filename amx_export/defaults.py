"""Names and limits shared by the commands and the modules behind them.

Kept free of imports, so that a command's parser can show its defaults without loading
torch (the CLI's start-up time is the import time of what its parsers touch).
"""

FULL_PRECISION = "fp"  # the name eval and reference use for the unquantized model
MAX_ONNX_GAP = 0.005  # eval: the ONNX perplexity must be within 0.5% of the reference's
