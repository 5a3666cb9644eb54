// Eviction policies, the trace simulator and the synthetic Zipf routing trace.
#include "expert/policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/status.h"

namespace tandem::expert {

const char* policy_name(PolicyKind kind) { return kind == PolicyKind::Lru ? "lru" : "lfu-decay"; }

EvictionPolicy::EvictionPolicy(PolicyKind kind, int n_keys, double half_life)
    : kind_(kind), half_life_(half_life), last_(size_t(n_keys), 0), count_(size_t(n_keys), 0) {}

double EvictionPolicy::decayed_count(int key) const {
  return count_[size_t(key)] * std::exp2(-double(now_ - last_[size_t(key)]) / half_life_);
}

void EvictionPolicy::on_access(int key) {
  ++now_;
  if (kind_ == PolicyKind::LfuDecay) count_[size_t(key)] = decayed_count(key) + 1;
  last_[size_t(key)] = now_;
}

bool EvictionPolicy::evict_before(int a, int b) const {
  if (kind_ == PolicyKind::LfuDecay) {
    const double ca = decayed_count(a), cb = decayed_count(b);
    if (ca != cb) return ca < cb;
  }
  return last_[size_t(a)] < last_[size_t(b)];  // LRU, and LfuDecay's tie-break
}

SimResult simulate(PolicyKind kind, int n_keys, const std::vector<int32_t>& trace, int n_slots, double half_life) {
  TANDEM_CHECK(n_slots > 0);
  EvictionPolicy policy(kind, n_keys, half_life);
  std::vector<int32_t> slots;  // resident keys
  std::vector<char> resident(size_t(n_keys), 0);
  SimResult r;
  for (int32_t key : trace) {
    ++r.accesses;
    if (resident[size_t(key)]) {
      ++r.hits;
    } else if (int(slots.size()) < n_slots) {
      slots.push_back(key);
      resident[size_t(key)] = 1;
    } else {
      size_t v = 0;  // a linear scan, as the cache does: eviction is rare next to a disk read
      for (size_t i = 1; i < slots.size(); ++i)
        if (policy.evict_before(slots[i], slots[v])) v = i;
      resident[size_t(slots[v])] = 0;
      slots[v] = key;
      resident[size_t(key)] = 1;
    }
    policy.on_access(key);
  }
  return r;
}

std::vector<int32_t> zipf_trace(int n_layers, int n_expert, int k, int n_tokens, double s, int phase_tokens,
                                double drift, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> weight(static_cast<size_t>(n_expert));
  for (int i = 0; i < n_expert; ++i) weight[size_t(i)] = 1.0 / std::pow(double(i + 1), s);
  std::vector<std::vector<int32_t>> order(static_cast<size_t>(n_layers), std::vector<int32_t>(static_cast<size_t>(n_expert)));
  for (auto& o : order) {
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), rng);
  }
  std::vector<int32_t> trace;
  trace.reserve(size_t(n_tokens) * size_t(n_layers) * size_t(k));
  std::vector<double> w;
  for (int t = 0; t < n_tokens; ++t) {
    if (t > 0 && t % phase_tokens == 0)
      for (auto& o : order)
        for (int i = 0; i < int(drift * n_expert); ++i)
          std::swap(o[rng() % size_t(n_expert)], o[rng() % size_t(n_expert)]);
    for (int l = 0; l < n_layers; ++l) {
      w = weight;  // k distinct draws: each chosen rank's weight drops to zero
      for (int j = 0; j < k; ++j) {
        std::discrete_distribution<int> pick(w.begin(), w.end());
        const int rank = pick(rng);
        w[size_t(rank)] = 0;
        trace.push_back(l * n_expert + order[size_t(l)][size_t(rank)]);
      }
    }
  }
  return trace;
}

}  // namespace tandem::expert
