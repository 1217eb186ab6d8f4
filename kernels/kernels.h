// kernels: the math of the trainer on raw buffers, with an explicit forward and backward per op.
//
// Owns: the CPU fp32/fp64 reference ops (kernels/cpu, OpenBLAS + OpenMP) and, when DAPE_CUDA is on,
// the CUDA backend (kernels/cuda). May include: the standard library, BLAS, OpenMP. Knows nothing of
// models, configs, files or processes.
//
// Shape legend, used by every op header (no file redefines a letter):
//   B   batch (sequences in a micro-batch)      T   sequence length
//   C   model width d                           NH  attention heads
//   HS  head size C / NH                        V   vocabulary rows (padded, Vp in the spec)
//   N   rows of a 2-D op, usually B * T         L   layers
//   D   DAPE MLP width                          DF  FIRE MLP width
//
// Conventions (llm.c's):
//   - Arguments: outputs, then inputs, then sizes.
//   - Gradients are named d + the forward name (dinp, dweight, dout).
//   - Parameter gradients accumulate (+=), so gradient accumulation over micro-batches is free.
//     Activation gradients overwrite (=), except where an op header says "+=" (the residual stream).
//   - Every op is a function template over F in {float, double}: float trains, double proves
//     gradients by finite differences. Both are instantiated in kernels/cpu.
#pragma once

#include "kernels/attention.h"
#include "kernels/dense.h"
#include "kernels/error.h"
#include "kernels/positional.h"
