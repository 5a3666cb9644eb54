// engine::model_shape: what the planner's speed model is told of a model.
#include "engine/engine.h"

#include <gtest/gtest.h>

namespace tandem {
namespace {

model::HParams hparams(const char* arch) {
  model::HParams hp;
  hp.arch = arch;
  hp.n_embd = 640, hp.n_vocab = 262144, hp.n_head = 4, hp.head_dim_k = hp.head_dim_v = 256;
  return hp;
}

TEST(ModelShape, CarriesTheShapeAndTheArchitecturesFfnActivation) {
  const placement::ModelShape gemma = model_shape(hparams("gemma3"));
  EXPECT_EQ(gemma.n_embd, 640);
  EXPECT_EQ(gemma.n_vocab, 262144);
  EXPECT_EQ(gemma.head_dim_k, 256);
  EXPECT_TRUE(gemma.ffn_gelu);  // GeGLU
  for (const char* arch : {"llama", "qwen3", "qwen3moe", "deepseek2"})
    EXPECT_FALSE(model_shape(hparams(arch)).ffn_gelu) << arch;
  EXPECT_FALSE(model_shape(hparams("no-such-architecture")).ffn_gelu);
}

}  // namespace
}  // namespace tandem
