// model: the GPT with every positional encoding and DAPE on the CPU backend.
//
// Owns: the model configuration (config.h), the parameter table with names, shapes, initialisation and
// weight-decay rule (parameters.h), the forward and backward over one activation arena (gpt.h), and AdamW
// with the learning-rate schedule and gradient clipping (optimizer.h). May include: kernels, comm. The
// training loop itself lives in launcher/.
#pragma once

#include "model/config.h"
#include "model/gpt.h"
#include "model/optimizer.h"
#include "model/parameters.h"
