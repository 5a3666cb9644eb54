// GrammarMatcher (parse stacks advanced one code point at a time, UTF-8 decoded byte by byte) and
// GrammarVocab (the token trie and the walk that finds every token a grammar allows). The parser is in
// grammar_parser.cpp. The stack discipline follows llama.cpp's src/llama-grammar.cpp
// (llama_grammar_advance_stack): a stack's top is always a character element; a rule reference on top
// is replaced by one stack per alternative, and a finished alternative pops back to its caller.
#include <algorithm>
#include <array>
#include <cstdio>
#include <unordered_map>

#include "sampling/grammar.h"
#include "tokenizer/tokenizer.h"

namespace tandem::sampling {

namespace {

// Bounds the recursion of one expansion (a chain of rules entered without consuming a character, as
// `a? b? c? ...` makes); each level costs one small stack frame.
constexpr size_t kMaxExpandDepth = 4096;

uint64_t hash_stack(const uint32_t* below, size_t n, uint32_t top, bool has_top) {
  uint64_t h = 1469598103934665603ull ^ (n + has_top);
  for (size_t i = 0; i < n; ++i) h = (h ^ below[i]) * 1099511628211ull;
  if (has_top) h = (h ^ top) * 1099511628211ull;
  return h;
}

std::string quoted(std::string_view bytes) {
  std::string out = "\"";
  for (const char c : bytes) {
    const auto b = static_cast<uint8_t>(c);
    if (c == '"' || c == '\\') {
      out += '\\', out += c;
    } else if (b < 0x20 || b == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", b);
      out += hex;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar) : grammar_(std::move(grammar)) { reset(); }

void GrammarMatcher::reset() {
  state_.clear();
  error_.clear();
  size_t steps = 0;
  for (const uint32_t alt : grammar_->alternatives[grammar_->root]) expand(nullptr, 0, alt, 0, &state_, &steps, &error_);
  if (!error_.empty()) state_.clear();
}

bool GrammarMatcher::is_complete() const {
  if (state_.partial_left != 0) return false;
  for (size_t i = 0; i < state_.n_stacks(); ++i)
    if (state_.stack(i).empty()) return true;
  return false;
}

Status GrammarMatcher::accept(std::string_view bytes) {
  if (is_dead())
    return invalid_argument("grammar: %s", error_.empty() ? "nothing can follow the text so far" : error_.c_str());
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (!advance_byte(state_, static_cast<uint8_t>(bytes[i]), &scratch_state_, &error_)) {
      state_.clear();
      if (!error_.empty()) return invalid_argument("grammar: %s", error_.c_str());
      error_ = "the text " + quoted(bytes) + " does not continue the grammar (at byte " + std::to_string(i) + ")";
      return invalid_argument("grammar: %s", error_.c_str());
    }
    std::swap(state_, scratch_state_);
  }
  return Status::ok();
}

bool GrammarMatcher::can_accept(std::string_view bytes) const {
  if (bytes.empty()) return !is_dead();
  std::string unused;
  const State* from = &state_;
  for (size_t i = 0; i < bytes.size(); ++i) {
    State* to = from == &probe_[0] ? &probe_[1] : &probe_[0];
    if (!advance_byte(*from, static_cast<uint8_t>(bytes[i]), to, &unused)) return false;
    from = to;
  }
  return true;
}

bool GrammarMatcher::advance_byte(const State& from, uint8_t byte, State* to, std::string* error) const {
  if (from.partial_left == 0) {
    if (byte < 0x80) return advance_code_point(from, byte, to, error);
    // The lead byte says how many continuation bytes follow and the smallest value that length may
    // encode; C0, C1, F5..FF and stray continuation bytes never start a character.
    uint8_t left;
    uint32_t bits, min;
    if (byte >= 0xC2 && byte <= 0xDF) {
      left = 1, bits = byte & 0x1F, min = 0x80;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      left = 2, bits = byte & 0x0F, min = 0x800;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      left = 3, bits = byte & 0x07, min = 0x10000;
    } else {
      return false;
    }
    *to = from;
    to->partial = bits, to->partial_left = left, to->partial_min = min;
    return viable_prefix(*to);
  }
  if ((byte & 0xC0) != 0x80) return false;
  const uint32_t cp = (from.partial << 6) | (byte & 0x3F);
  if (from.partial_left > 1) {
    *to = from;
    to->partial = cp;
    --to->partial_left;
    return viable_prefix(*to);
  }
  if (cp < from.partial_min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  return advance_code_point(from, cp, to, error);
}

// Whether some code point that starts with the bytes read so far could match a stack's top: prunes a
// token walk at the first byte of a character the grammar cannot take.
bool GrammarMatcher::viable_prefix(const State& s) const {
  const unsigned shift = 6u * s.partial_left;
  const uint32_t lo = std::max(s.partial << shift, s.partial_min);
  const uint32_t hi = std::min((s.partial << shift) | ((1u << shift) - 1), 0x10FFFFu);
  if (lo > hi) return false;
  for (size_t i = 0; i < s.n_stacks(); ++i) {
    const auto st = s.stack(i);
    if (!st.empty() && grammar_->classes[grammar_->elements[st.back()].value].intersects(lo, hi)) return true;
  }
  return false;
}

bool GrammarMatcher::advance_code_point(const State& from, uint32_t cp, State* to, std::string* error) const {
  to->clear();
  size_t steps = 0;
  for (size_t i = 0; i < from.n_stacks(); ++i) {
    const auto st = from.stack(i);
    if (st.empty()) continue;  // a completed root takes nothing more
    const uint32_t top = st.back();
    if (!grammar_->classes[grammar_->elements[top].value].matches(cp)) continue;
    expand(st.data(), st.size() - 1, top + 1, 0, to, &steps, error);
    if (!error->empty()) {
      to->clear();
      return false;
    }
  }
  return to->n_stacks() > 0;
}

// Resolves position `pos` on top of the stack `below[0, n_below)` until every resulting stack has a
// character element on top (or is empty: the root is complete), adding each to `to`.
void GrammarMatcher::expand(const uint32_t* below, size_t n_below, uint32_t pos, size_t depth, State* to,
                            size_t* steps, std::string* error) const {
  const auto& elements = grammar_->elements;
  for (;;) {
    if (!error->empty()) return;
    if (++*steps > kMaxExpandSteps || depth > kMaxExpandDepth) {
      *error = "the grammar is too ambiguous: one character needs more than " +
               (depth > kMaxExpandDepth ? std::to_string(kMaxExpandDepth) + " nested rule expansions"
                                        : std::to_string(kMaxExpandSteps) + " expansion steps");
      return;
    }
    const Grammar::Element e = elements[pos];
    if (e.kind == Grammar::Element::kChars) return emit(below, n_below, pos, true, to, error);
    if (e.kind == Grammar::Element::kEnd) {
      if (n_below == 0) return emit(below, 0, 0, false, to, error);
      pos = below[--n_below];  // the caller's continuation
      continue;
    }
    // A rule: its continuation goes below each alternative, unless it is the end of the caller's
    // alternative (a tail call), which keeps right-recursive loops like `r ::= x r |` from growing.
    if (scratch_.size() <= depth) scratch_.resize(depth + 1);
    std::vector<uint32_t>& w = scratch_[depth];
    w.assign(below, below + n_below);
    if (elements[pos + 1].kind != Grammar::Element::kEnd) w.push_back(pos + 1);
    for (const uint32_t alt : grammar_->alternatives[e.value]) expand(w.data(), w.size(), alt, depth + 1, to, steps, error);
    return;
  }
}

void GrammarMatcher::emit(const uint32_t* below, size_t n_below, uint32_t pos, bool has_top, State* to,
                          std::string* error) const {
  const uint64_t h = hash_stack(below, n_below, pos, has_top);
  const size_t n = n_below + has_top;
  for (size_t i = 0; i < to->n_stacks(); ++i) {
    if (to->hashes[i] != h) continue;
    const auto st = to->stack(i);
    if (st.size() == n && std::equal(below, below + n_below, st.begin()) && (!has_top || st.back() == pos)) return;
  }
  if (to->n_stacks() >= kMaxStacks) {
    *error = "the grammar is too ambiguous: more than " + std::to_string(kMaxStacks) + " parse stacks at once";
    return;
  }
  to->data.insert(to->data.end(), below, below + n_below);
  if (has_top) to->data.push_back(pos);
  to->ends.push_back(static_cast<uint32_t>(to->data.size()));
  to->hashes.push_back(h);
}

// ---- GrammarVocab ----------------------------------------------------------------------------------

std::shared_ptr<const GrammarVocab> GrammarVocab::from_tokenizer(const tokenizer::Tokenizer& tok) {
  std::vector<std::string> pieces(tok.n_tokens());
  for (size_t id = 0; id < pieces.size(); ++id) pieces[id] = tok.token_to_piece(static_cast<int32_t>(id), false);
  return from_pieces(std::move(pieces), tok.vocab().eog_ids);
}

std::shared_ptr<const GrammarVocab> GrammarVocab::from_pieces(std::vector<std::string> pieces,
                                                              std::vector<int32_t> eog_ids) {
  auto v = std::make_shared<GrammarVocab>();
  v->pieces_ = std::move(pieces);
  std::erase_if(eog_ids, [&](int32_t id) { return id < 0 || static_cast<size_t>(id) >= v->pieces_.size(); });
  std::sort(eog_ids.begin(), eog_ids.end());
  v->eog_ids_ = std::move(eog_ids);
  v->build();
  return v;
}

bool GrammarVocab::is_eog(int32_t id) const { return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id); }

// Breadth first over the tokens sorted by text, so each node's children are contiguous.
void GrammarVocab::build() {
  token_ids_.resize(pieces_.size());
  for (size_t i = 0; i < token_ids_.size(); ++i) token_ids_[i] = static_cast<int32_t>(i);
  std::sort(token_ids_.begin(), token_ids_.end(), [&](int32_t a, int32_t b) {
    return pieces_[size_t(a)] < pieces_[size_t(b)] || (pieces_[size_t(a)] == pieces_[size_t(b)] && a < b);
  });
  struct Pending {
    uint32_t node;
    size_t lo, hi, depth;  // the sorted tokens [lo, hi) share this node's text, depth bytes long
  };
  std::vector<Pending> queue{{0, 0, token_ids_.size(), 0}};
  nodes_.assign(1, Node{});
  for (size_t q = 0; q < queue.size(); ++q) {
    const Pending p = queue[q];
    size_t i = p.lo;
    nodes_[p.node].first_token = static_cast<uint32_t>(i);
    while (i < p.hi && pieces_[size_t(token_ids_[i])].size() == p.depth) ++i;  // shorter texts sort first
    nodes_[p.node].n_tokens = static_cast<uint32_t>(i - p.lo);
    nodes_[p.node].first_child = static_cast<uint32_t>(nodes_.size());
    while (i < p.hi) {
      const uint8_t b = static_cast<uint8_t>(pieces_[size_t(token_ids_[i])][p.depth]);
      size_t j = i;
      while (j < p.hi && static_cast<uint8_t>(pieces_[size_t(token_ids_[j])][p.depth]) == b) ++j;
      Node child;
      child.byte = b;
      queue.push_back({static_cast<uint32_t>(nodes_.size()), i, j, p.depth + 1});
      nodes_.push_back(child);
      ++nodes_[p.node].n_children;
      i = j;
    }
  }
}

// The walk meets the same few matcher states again and again (inside a JSON string, every ordinary
// character leads back to the state it came from), so states are interned and each (state, byte)
// step is computed once per walk; most trie nodes then cost one table lookup.
struct GrammarVocab::Walk {
  static constexpr int32_t kUnknown = -2, kRejected = -1;
  struct Interned {
    GrammarMatcher::State state;
    std::array<int32_t, 256> next;
  };
  Walk(const GrammarMatcher& matcher, std::vector<uint8_t>* out) : m(matcher), allowed(out) {}
  const GrammarMatcher& m;
  std::vector<uint8_t>* allowed;
  size_t n_allowed = 0;
  std::vector<Interned> states;
  std::unordered_map<uint64_t, int32_t> by_hash;
  GrammarMatcher::State scratch;

  static uint64_t hash(const GrammarMatcher::State& s) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t(s.partial) << 8) ^ s.partial_left;
    for (const uint64_t x : s.hashes) h = (h ^ x) * 1099511628211ull;  // stacks are deduplicated, in order
    return h;
  }
  int32_t intern(const GrammarMatcher::State& s) {
    const uint64_t h = hash(s);
    auto [it, fresh] = by_hash.try_emplace(h, int32_t(states.size()));
    if (!fresh) {
      const GrammarMatcher::State& o = states[size_t(it->second)].state;
      if (o.data == s.data && o.ends == s.ends && o.partial == s.partial && o.partial_left == s.partial_left &&
          o.partial_min == s.partial_min)
        return it->second;
    }
    states.push_back({s, {}});
    states.back().next.fill(kUnknown);
    return int32_t(states.size() - 1);
  }
  int32_t step(int32_t from, uint8_t byte) {
    int32_t next = states[size_t(from)].next[byte];
    if (next != kUnknown) return next;
    std::string unused;  // a limit hit prunes the branch: its tokens are not offered
    next = m.advance_byte(states[size_t(from)].state, byte, &scratch, &unused) ? intern(scratch) : kRejected;
    states[size_t(from)].next[byte] = next;
    return next;
  }
};

size_t GrammarVocab::allowed_tokens(const GrammarMatcher& m, std::vector<uint8_t>* allowed) const {
  allowed->assign(pieces_.size(), 0);
  Walk w(m, allowed);
  if (!m.is_dead()) walk(w, 0, w.intern(m.state()));
  const bool complete = m.is_complete();
  for (const int32_t id : eog_ids_) {
    w.n_allowed += size_t(complete) - (*allowed)[size_t(id)];
    (*allowed)[size_t(id)] = complete;
  }
  return w.n_allowed;
}

void GrammarVocab::walk(Walk& w, uint32_t node, int32_t state) const {
  const Node& n = nodes_[node];
  if (node != 0) {  // the root's tokens have empty text
    for (uint32_t t = n.first_token; t < n.first_token + n.n_tokens; ++t) (*w.allowed)[size_t(token_ids_[t])] = 1;
    w.n_allowed += n.n_tokens;
  }
  for (uint32_t c = n.first_child; c < n.first_child + n.n_children; ++c) {
    const int32_t next = w.step(state, nodes_[c].byte);
    if (next >= 0) walk(w, c, next);
  }
}

bool GrammarVocab::allows(const GrammarMatcher& m, int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) return false;
  if (is_eog(id)) return m.is_complete();
  const std::string& p = pieces_[size_t(id)];
  return !p.empty() && m.can_accept(p);
}

}  // namespace tandem::sampling
