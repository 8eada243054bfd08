/* golden.h - compare a model's logits and greedy continuation with a golden
 * file (tokens I32 [T], logits F32 [T, V], greedy I32 [G], optional
 * prefix_tokens/prefix_logits) made by a reference implementation. */
#ifndef LMX_TEST_GOLDEN_H
#define LMX_TEST_GOLDEN_H

/* Fails the current test when max|Δlogit| > rel_tol · max|ref| or the greedy
 * continuation differs at any step. */
void golden_check(const char *model_path, const char *golden_path, const char *name, double rel_tol);

#endif
