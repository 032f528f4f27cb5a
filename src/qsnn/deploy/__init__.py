"""Integer deployment of trained qsnn models (SPEC §9).

A trained model becomes an ``IntegerProgram``: ``b_w``-bit integer weight codes with
per-channel scales folded away, batch norm folded into per-channel integer thresholds and
biases (a negative scale flips the comparison), membranes in int64 fixed point with the leak
``1/tau = 2**-m`` as a shift, spikes as ``b_s``-bit levels, every conv/linear run bit-serially
as ``T * b_s`` binary slices -- what the accelerator of ``qsnn.hardware`` executes::

    from qsnn.deploy import convert, load_program, verify
    program = convert(model, mean=data.test.mean, std=data.test.std)
    program.save("run/deploy")                     # program.npz + manifest.json
    logits = load_program("run/deploy").run(uint8_images).logits
    print(verify(model, program, data.test).summary())

Formats and error bounds: ``qsnn.deploy.fixedpoint``; the folding: ``qsnn.deploy.convert``.
"""

from .convert import SUPPORTED, convert
from .fixedpoint import OUTPUT_FRAC_BITS, THRESHOLD_BITS
from .program import IntegerProgram, ProgramError, ProgramOutput, load_program
from .verify import VerifyReport, verify, verify_run

__all__ = [
    "OUTPUT_FRAC_BITS",
    "SUPPORTED",
    "THRESHOLD_BITS",
    "IntegerProgram",
    "ProgramError",
    "ProgramOutput",
    "VerifyReport",
    "convert",
    "load_program",
    "verify",
    "verify_run",
]
