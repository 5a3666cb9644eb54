// The blocks of blocks.h. Op order and roundings are the ones every architecture's logits fixture
// was recorded against: keep them.
#include "model/blocks.h"

#include <algorithm>
#include <cmath>

namespace tandem::model {

using Slot = ForwardScratch::Slot;

Status attention_block(const AttentionWeights& w, const AttentionConfig& c, const PassInputs& in, size_t il,
                       const float* x, float* out, ForwardScratch& s) {
  Backend& b = *w.wq->backend;
  Backend& kb = *in.model.kv_layers()[il].backend;
  const Model& m = in.model;
  const int64_t n = in.batch.size();
  const int64_t hd = c.head_dim_k, hdv = c.head_dim_v;
  const int64_t n_q = c.n_head * hd, n_k = c.n_head_kv * hd, n_v = c.n_head_kv * hdv, n_o = c.n_head * hdv;
  const KvCache& kv = in.kv;
  const int k_rot = kv_rotation_block(kv.type_k(), hd, false), v_rot = kv_rotation_block(kv.type_v(), hdv, true);
  auto on = [&](const Weight* wt) { return wt ? &m.on(*wt, b) : nullptr; };
  TANDEM_ASSIGN(float* q, s.get(b, Slot::kQ, n * n_q));
  TANDEM_ASSIGN(float* k, s.get(b, Slot::kK, n * n_k));
  TANDEM_ASSIGN(float* v, s.get(b, Slot::kV, n * n_v));
  TANDEM_ASSIGN(const DeviceInputs bi, s.inputs(b));
  RopeParams rope = c.rope;
  if (c.rope_freqs) rope.freq_factors = static_cast<const float*>(m.on(*c.rope_freqs, b).data);

  b.matmul(*w.wq, x, n, q, on(w.bq));  // [n, n_head, hd]
  b.matmul(*w.wk, x, n, k, on(w.bk));  // [n, n_head_kv, hd]
  b.matmul(*w.wv, x, n, v, on(w.bv));  // [n, n_head_kv, hdv]
  if (w.q_norm) b.rms_norm(q, on(w.q_norm), n * c.n_head, hd, c.norm_eps, q);
  if (w.k_norm) b.rms_norm(k, on(w.k_norm), n * c.n_head_kv, hd, c.norm_eps, k);
  b.rope(q, n, c.n_head, int(hd), bi.pos, rope);
  b.rope(k, n, c.n_head_kv, int(hd), bi.pos, rope);
  if (k_rot) {
    b.hadamard(q, n * c.n_head, hd, k_rot);
    b.hadamard(k, n * c.n_head_kv, hd, k_rot);
  }
  if (v_rot) b.hadamard(v, n * c.n_head_kv, hdv, v_rot);

  // Store and attend where the cache lives.
  TANDEM_ASSIGN(q, s.move(b, q, kb, Slot::kQ, n * n_q));
  TANDEM_ASSIGN(k, s.move(b, k, kb, Slot::kK, n * n_k));
  TANDEM_ASSIGN(v, s.move(b, v, kb, Slot::kV, n * n_v));
  TANDEM_ASSIGN(float* attn, s.get(kb, Slot::kAttn, n * n_o));
  TANDEM_ASSIGN(const DeviceInputs ki, s.inputs(kb));
  const KvCache::Layer& cache = kv.layer(il);
  kb.kv_store(k, v, n, n_k, n_v, ki.cells, kv.type_k(), kv.type_v(), cache.k, cache.v);
  AttentionArgs a;
  a.q = q;
  a.out = attn;
  a.n_tokens = n;
  a.n_head = c.n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim_k = int(hd);
  a.head_dim_v = int(hdv);
  a.scale = c.scale;
  a.sliding_window = c.sliding_window;
  a.token_pos = ki.pos;
  a.token_seq = ki.seq;
  a.k_type = kv.type_k();
  a.v_type = kv.type_v();
  a.flash = in.flash_attn;
  a.k = cache.k;
  a.v = cache.v;
  a.n_cells = kv.active_cells();
  a.cell_pos = ki.cell_pos;
  a.cell_seq = ki.cell_seq;
  kb.attention(a);  // [n, n_head, hdv]
  if (v_rot) kb.hadamard(attn, n * c.n_head, hdv, v_rot);

  TANDEM_ASSIGN(attn, s.move(kb, attn, b, Slot::kAttn, n * n_o));
  b.matmul(*w.wo, attn, n, out);  // [n, n_embd]
  return Status::ok();
}

Status ffn_glu(const Weight& gate, const Weight& up, const Weight& down, GluKind act, int64_t n, const float* x,
               float* out, ForwardScratch& s) {
  // Each matrix runs where it lives (-ot may part them, as llama.cpp recipes do); x and out are on
  // gate's device and the intermediates move as needed.
  Backend &gb = *gate.backend, &ub = *up.backend, &db = *down.backend;
  const int64_t ff = gate.n_rows(), e = gate.row_length();
  TANDEM_ASSIGN(float* g, s.get(gb, Slot::kGate, n * ff));
  TANDEM_ASSIGN(float* xu, s.move(gb, const_cast<float*>(x), ub, Slot::kFfnIn, n * e));
  TANDEM_ASSIGN(float* u, s.get(ub, Slot::kUp, n * ff));
  gb.matmul(gate, x, n, g);  // [n, ff]
  ub.matmul(up, xu, n, u);   // [n, ff]
  TANDEM_ASSIGN(u, s.move(ub, u, gb, Slot::kUp, n * ff));
  if (act == GluKind::GeluTanh) gb.geglu(g, u, n * ff, g);
  else gb.swiglu(g, u, n * ff, g);
  if (&db == &gb) {
    db.matmul(down, g, n, out);  // [n, n_embd]
    return Status::ok();
  }
  TANDEM_ASSIGN(g, s.move(gb, g, db, Slot::kGate, n * ff));
  TANDEM_ASSIGN(float* d, s.get(db, Slot::kFfnOut, n * e));
  db.matmul(down, g, n, d);  // [n, n_embd]
  TANDEM_ASSIGN(d, s.move(db, d, gb, Slot::kFfnOut, n * e));
  gb.copy_2d(d, e, out, e, n, e);
  return Status::ok();
}

Status output_logits(const PassInputs& in, const Weight& norm, const Weight& output, float eps, float softcap,
                     Backend& x_device, float* x, ForwardScratch& s, std::vector<float>& logits) {
  Backend& b = *output.backend;
  const int64_t n = in.batch.size(), e = output.row_length(), n_out = s.n_out(), n_vocab = output.n_rows();
  TANDEM_ASSIGN(x, s.move(x_device, x, b, Slot::kX, n * e));
  TANDEM_ASSIGN(float* rows, s.get(b, Slot::kRows, n_out * e));
  TANDEM_ASSIGN(const DeviceInputs bi, s.inputs(b));
  // Only the rows whose logits are wanted go through the output matmul (the largest one).
  Weight x_rows;
  x_rows.name = "hidden state";
  x_rows.type = WeightType::F32;
  x_rows.shape = {n, e};
  x_rows.data = x;
  x_rows.row_stride = size_t(e) * sizeof(float);
  x_rows.size_bytes = size_t(n * e) * sizeof(float);
  x_rows.backend = &b;
  b.get_rows(x_rows, {bi.out_rows, size_t(n_out)}, rows);           // [n_out, e]
  b.rms_norm(rows, &in.model.on(norm, b), n_out, e, eps, rows);     // [n_out, e]
  TANDEM_ASSIGN(float* dev_logits, s.get(b, Slot::kLogits, n_out * n_vocab));
  b.matmul(output, rows, n_out, dev_logits);                         // [n_out, n_vocab]
  if (softcap > 0) b.softcap(dev_logits, n_out * n_vocab, softcap);
  logits.resize(size_t(n_out * n_vocab));
  b.copy_to_host(logits.data(), dev_logits, logits.size() * sizeof(float));
  return s.synchronize();
}

namespace {

// Appends index i to best ([n_best] indices, by value descending, lower index first among equals) when
// it ranks among the first `k` of the indices seen so far; called with i ascending, this keeps what a
// stable sort by value would put first, without the sort's temporary buffer.
void keep_best(const float* value, int32_t i, int64_t k, int32_t* best, int64_t* n_best) {
  int64_t pos = *n_best;
  while (pos > 0 && value[i] > value[best[pos - 1]]) --pos;
  if (pos >= k) return;
  const int64_t end = std::min(*n_best, k - 1);
  for (int64_t j = end; j > pos; --j) best[j] = best[j - 1];
  best[pos] = i;
  *n_best = end + 1;
}

// The distinct experts of ids ([n] values), ascending, into `out`.
void distinct_experts(const int32_t* ids, int64_t n, std::vector<int32_t>& out) {
  out.assign(ids, ids + n);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

// The next MoE layer's experts for these tokens by its router on this layer's input x (a guess: its real
// input has been through one more attention block), prefetched into the cache; ExpertCacheStats counts
// how often the guess was right when that layer routes.
Status prefetch_next_layer(const MoeWeights& l, const MoeConfig& c, int64_t n, const float* x, ForwardScratch& s) {
  const MoeWeights& next = *l.next;
  Backend& rb = *next.gate_inp->backend;
  if (&rb != l.down_exps->backend) return Status::ok();  // x lives on the experts' device
  MoeRouteScratch& m = s.moe_route();
  const int64_t ne = c.n_expert, k = c.n_expert_used;
  TANDEM_ASSIGN(float* router, s.get(rb, Slot::kRouter, n * ne));
  rb.matmul(*next.gate_inp, x, n, router);  // [n, n_expert]
  m.next_logits.resize(size_t(n * ne));
  rb.copy_to_host(m.next_logits.data(), router, m.next_logits.size() * sizeof(float));
  TANDEM_TRY(rb.synchronize());
  m.next_ids.resize(size_t(n * k));
  m.next_w.resize(size_t(n * k));
  moe_route(c, m.next_logits.data(), next.exp_probs_b, n, m.next_ids.data(), m.next_w.data(), m);
  distinct_experts(m.next_ids.data(), n * k, m.guess);
  m.guess_layer = next.layer;
  return l.cache->prefetch(int(next.layer), m.guess);
}

// Runs the routed experts from the cache: gate_out ([n, k, ff]) and down ([n, k, e]) as the resident
// path computes them. The distinct experts go in groups of at most the cache's slots, each acquired
// (pinned) for its matmuls and released after its down projection.
Status cached_experts(const MoeWeights& l, const MoeConfig& c, int64_t n, const float* x, const int32_t* ids,
                      float* gate_out, float* down, ForwardScratch& s) {
  expert::ExpertCache& cache = *l.cache;
  Backend& b = *l.down_exps->backend;
  MoeRouteScratch& m = s.moe_route();
  const int64_t k = c.n_expert_used;
  const int layer = int(l.layer);
  // Which slice of an acquired expert is which tensor (the layout lists them by name).
  const expert::MoeLayer& ml = *cache.layout().find(layer);
  int gate_i = -1, up_i = -1, down_i = -1;
  const Weight& gate = l.gate_up_exps ? *l.gate_up_exps : *l.gate_exps;
  for (size_t t = 0; t < ml.tensors.size(); ++t) {
    if (ml.tensors[t].name == gate.name) gate_i = int(t);
    if (l.up_exps && ml.tensors[t].name == l.up_exps->name) up_i = int(t);
    if (ml.tensors[t].name == l.down_exps->name) down_i = int(t);
  }
  TANDEM_CHECK(gate_i >= 0 && down_i >= 0 && (up_i >= 0 || !l.up_exps));
  m.gate_data.assign(size_t(c.n_expert), nullptr);
  m.up_data.assign(size_t(c.n_expert), nullptr);
  m.down_data.assign(size_t(c.n_expert), nullptr);
  const std::vector<int32_t>& unique = m.unique;
  const size_t per_group = size_t(cache.n_slots());
  for (size_t g0 = 0; g0 < unique.size(); g0 += per_group) {
    const size_t g1 = std::min(unique.size(), g0 + per_group);
    Status st;
    size_t acquired = g0;
    for (; acquired < g1 && st.is_ok(); ++acquired) {
      auto v = cache.acquire(layer, unique[acquired]);
      if (!v) {
        st = v.status();
        break;
      }
      const size_t e = size_t(unique[acquired]);
      m.gate_data[e] = v->slices[size_t(gate_i)].data();
      m.up_data[e] = up_i >= 0 ? v->slices[size_t(up_i)].data() : nullptr;
      m.down_data[e] = v->slices[size_t(down_i)].data();
    }
    // This layer's experts pinned, the next layer's guessed ones can take the other slots.
    if (st.is_ok() && g0 == 0 && g1 == unique.size() && l.next) st = prefetch_next_layer(l, c, n, x, s);
    if (st.is_ok()) {
      b.matmul_id_swiglu_ptrs(gate, m.gate_data.data(), l.up_exps, m.up_data.data(), x, ids, n, int(k), gate_out);
      b.matmul_id_ptrs(*l.down_exps, m.down_data.data(), gate_out, true, ids, n, int(k), down);  // [n, k, e]
      st = b.synchronize();
    }
    for (size_t i = g0; i < acquired; ++i) {
      cache.release(layer, unique[i]);
      m.gate_data[size_t(unique[i])] = m.up_data[size_t(unique[i])] = m.down_data[size_t(unique[i])] = nullptr;
    }
    TANDEM_TRY(st);
  }
  return Status::ok();
}

}  // namespace

void moe_route(const MoeConfig& c, const float* logits, const float* probs_b, int64_t n, int32_t* ids, float* w,
               MoeRouteScratch& s) {
  const int64_t ne = c.n_expert, k = c.n_expert_used;
  s.probs.resize(size_t(ne));
  s.select.resize(size_t(ne));
  s.group_score.resize(size_t(std::max<int64_t>(c.n_group, 1)));
  s.best.resize(size_t(std::max(k, c.n_group_used)));
  float *probs = s.probs.data(), *select = s.select.data();
  int32_t* best = s.best.data();
  for (int64_t t = 0; t < n; ++t) {
    const float* lg = logits + t * ne;
    if (c.sigmoid_gating) {
      for (int64_t i = 0; i < ne; ++i) probs[i] = 1.0f / (1.0f + std::exp(-lg[i]));
    } else {
      const float m = *std::max_element(lg, lg + ne);
      double sum = 0;
      for (int64_t i = 0; i < ne; ++i) sum += probs[i] = std::exp(lg[i] - m);
      for (int64_t i = 0; i < ne; ++i) probs[i] = float(probs[i] / sum);
    }
    for (int64_t i = 0; i < ne; ++i) select[i] = probs[i] + (probs_b ? probs_b[i] : 0.0f);
    if (c.n_group > 1) {
      // A group scores the sum of its two best; experts outside the n_group_used best groups are out.
      const int64_t per = ne / c.n_group;
      for (int64_t g = 0; g < c.n_group; ++g) {
        float first = -INFINITY, second = -INFINITY;
        for (int64_t i = g * per; i < (g + 1) * per; ++i) {
          if (select[i] > first) {
            second = first;
            first = select[i];
          } else if (select[i] > second) {
            second = select[i];
          }
        }
        s.group_score[size_t(g)] = first + (per > 1 ? second : 0.0f);
      }
      int64_t n_kept = 0;
      for (int32_t g = 0; g < c.n_group; ++g) keep_best(s.group_score.data(), g, c.n_group_used, best, &n_kept);
      for (int64_t g = 0; g < c.n_group; ++g)
        if (std::find(best, best + n_kept, int32_t(g)) == best + n_kept)
          std::fill(select + g * per, select + (g + 1) * per, -INFINITY);
    }
    int64_t n_best = 0;
    for (int32_t i = 0; i < ne; ++i) keep_best(select, i, k, best, &n_best);
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      ids[t * k + j] = best[j];
      w[t * k + j] = probs[best[j]];
      sum += w[t * k + j];
    }
    if (c.norm_weights)
      for (int64_t j = 0; j < k; ++j) w[t * k + j] /= std::max(sum, 6.103515625e-5f);  // clamped as ggml does
    if (c.weights_scale != 0 && c.weights_scale != 1)
      for (int64_t j = 0; j < k; ++j) w[t * k + j] *= c.weights_scale;
  }
}

Result<float*> moe_ffn(const MoeWeights& l, const MoeConfig& c, int64_t n, float* x, ForwardScratch& s) {
  Backend& rb = *l.gate_inp->backend;
  const Weight& gate = l.gate_up_exps ? *l.gate_up_exps : *l.gate_exps;
  const int64_t e = l.gate_inp->row_length(), ne = c.n_expert, k = c.n_expert_used, ff = l.down_exps->row_length();
  TANDEM_ASSIGN(float* router, s.get(rb, Slot::kRouter, n * ne));
  rb.matmul(*l.gate_inp, x, n, router);  // [n, n_expert]
  std::vector<float>& logits = s.host_f32(Slot::kRouter);
  logits.resize(size_t(n * ne));
  rb.copy_to_host(logits.data(), router, logits.size() * sizeof(float));
  TANDEM_TRY(s.synchronize());  // also ends the last layer's uploads of the host arrays refilled below
  std::vector<int32_t>& ids_host = s.host_i32(Slot::kExpertIds);
  std::vector<float>& w_host = s.host_f32(Slot::kExpertWeights);
  ids_host.resize(size_t(n * k));
  w_host.resize(size_t(n * k));
  moe_route(c, logits.data(), l.exp_probs_b, n, ids_host.data(), w_host.data(), s.moe_route());
  if (ExpertStats* stats = s.expert_stats()) stats->add(l.layer, ids_host.data(), n, k);
  if (l.cache) {  // the reads start now and overlap the shared experts below
    MoeRouteScratch& m = s.moe_route();
    distinct_experts(ids_host.data(), n * k, m.unique);
    if (m.guess_layer == l.layer) {
      uint64_t right = 0;
      for (int32_t id : m.unique) right += std::binary_search(m.guess.begin(), m.guess.end(), id);
      l.cache->record_guess(m.guess.size(), right, m.unique.size());
      m.guess_layer = -1;
    }
    TANDEM_TRY(l.cache->request(int(l.layer), m.unique));
  }

  // The experts' three matrices may each have a device (llama.cpp recipes such as
  // -ot "ffn_(up|down)_exps=CPU" part them); the result gathers on down's, eb.
  Backend &gd = *gate.backend, &ud = l.up_exps ? *l.up_exps->backend : gd, &eb = *l.down_exps->backend;
  auto ids_on = [&](Backend& b, Slot slot) -> Result<int32_t*> {
    TANDEM_ASSIGN(int32_t* ids, s.get_i32(b, slot, n * k));
    b.copy_from_host(ids, ids_host.data(), ids_host.size() * sizeof(int32_t));
    return ids;
  };
  TANDEM_ASSIGN(int32_t* ids_g, ids_on(gd, Slot::kExpertIds));
  int32_t* ids_u = ids_g;
  if (&ud != &gd) {
    TANDEM_ASSIGN(ids_u, ids_on(ud, Slot::kMoeIds2));
  }
  int32_t* ids_d = &eb == &ud ? ids_u : ids_g;
  if (&eb != &ud && &eb != &gd) {
    TANDEM_ASSIGN(ids_d, ids_on(eb, Slot::kMoeIds3));
  }
  TANDEM_ASSIGN(float* w, s.get(eb, Slot::kExpertWeights, n * k));
  eb.copy_from_host(w, w_host.data(), w_host.size() * sizeof(float));
  TANDEM_ASSIGN(float* xg, s.move(rb, x, gd, Slot::kMoeIn, n * e));
  float* xu = xg;
  if (&ud != &gd) {
    TANDEM_ASSIGN(xu, s.move(rb, x, ud, Slot::kFfnIn, n * e));
  }
  // The shared experts next, queued on their device (a GPU, with the routed experts in RAM): they run
  // while the CPU computes the routed ones below (issue 13; the --trace timeline shows it). After the
  // moves above, which may wait for the router's device, so that wait does not cover them too.
  Backend* sb = l.gate_shexp ? l.gate_shexp->backend : nullptr;
  float* shared = nullptr;
  if (sb) {
    TANDEM_ASSIGN(float* xs, s.move(rb, x, *sb, Slot::kMoeIn, n * e));
    TANDEM_ASSIGN(shared, s.get(*sb, Slot::kShared, n * e));
    TANDEM_TRY(ffn_glu(*l.gate_shexp, *l.up_shexp, *l.down_shexp, GluKind::Silu, n, xs, shared, s));  // [n, e]
  }

  TANDEM_ASSIGN(float* gate_out, s.get(gd, Slot::kMoeGate, n * k * ff));
  float* down = nullptr;
  if (l.cache) {  // on the CPU (Model::place checks it), so gd, ud and eb are one device
    TANDEM_ASSIGN(down, s.get(eb, Slot::kMoeDown, n * k * e));
    TANDEM_TRY(cached_experts(l, c, n, xg, ids_g, gate_out, down, s));  // [n, k, e]
  } else {
    if (&ud == &gd) {  // gate and up in one pass over the routed tokens, SwiGLU on the way out
      gd.matmul_id_swiglu(gate, l.up_exps, xg, ids_g, n, int(k), gate_out);  // [n, k, ff]
    } else {
      TANDEM_ASSIGN(float* up, s.get(ud, Slot::kMoeUp, n * k * ff));
      gd.matmul_id(gate, xg, false, ids_g, n, int(k), gate_out);  // [n, k, ff]
      ud.matmul_id(*l.up_exps, xu, false, ids_u, n, int(k), up);  // [n, k, ff]
      TANDEM_ASSIGN(up, s.move(ud, up, gd, Slot::kMoeUp, n * k * ff));
      gd.swiglu(gate_out, up, n * k * ff, gate_out);
    }
    TANDEM_ASSIGN(gate_out, s.move(gd, gate_out, eb, Slot::kMoeGate, n * k * ff));
    TANDEM_ASSIGN(down, s.get(eb, Slot::kMoeDown, n * k * e));
    eb.matmul_id(*l.down_exps, gate_out, true, ids_d, n, int(k), down);  // [n, k, e]
  }
  TANDEM_ASSIGN(float* out, s.get(eb, Slot::kMoeOut, n * e));
  eb.weighted_sum(down, w, n, int(k), e, out);  // [n, e]
  if (shared) {
    TANDEM_ASSIGN(shared, s.move(*sb, shared, eb, Slot::kShared, n * e));
    eb.add(out, shared, n * e, out);
  }
  return s.move(eb, out, rb, Slot::kMoeOut, n * e);
}

}  // namespace tandem::model
