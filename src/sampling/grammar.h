// Grammar-constrained sampling: llama.cpp's GBNF notation (grammars/README.md there) parsed into a
// Grammar, a GrammarMatcher that follows generated text one UTF-8 byte at a time, and GrammarVocab,
// the vocabulary's token texts in a byte trie so one walk finds every token that can continue a grammar.
// The sampler stage that uses them lives in sampler.h; JSON Schema -> GBNF in json_schema.h.
//
// Supported GBNF: rules `name ::= ...` (names of letters, digits and '-'), `|`, sequences, `( )`,
// `*` `+` `?` `{m}` `{m,}` `{m,n}` (m, n <= kMaxRepetitions), "literals", [classes] with ranges and `^`,
// `.` (any code point), escapes \xXX \uXXXX \UXXXXXXXX \t \r \n \\ \" \[ \] \-, `#` comments; the rule
// `root` is where matching starts. Not supported: llama.cpp's token matches `<...>`, `<[id]>`, `!<...>`.
// Refused with a message: undefined or duplicate rules, left recursion (a rule that can reach itself
// before consuming a character, which also covers a repeated part that can match nothing).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace tandem::tokenizer {
class Tokenizer;
}

namespace tandem::sampling {

// A parsed grammar. Immutable, so one instance can be shared by any number of matchers and threads.
class Grammar {
 public:
  // Errors name the line and column: "grammar: line 3, column 14: expected ')'".
  static Result<std::shared_ptr<const Grammar>> parse(std::string_view gbnf);

  static constexpr uint32_t kMaxRepetitions = 10000;  // largest m or n in {m,n}
  static constexpr size_t kMaxElements = 1u << 20;    // the grammar's size once repetitions are expanded
  static constexpr int kMaxNesting = 256;             // ( ) groups inside each other

  // The flattened form the matcher walks. Every rule is a list of alternatives; an alternative is a
  // run of elements in `elements` that ends with an End element. Repetitions and groups have been
  // rewritten into generated rules, named after their rule ("value-3").
  struct Element {
    enum Kind : uint8_t { kEnd, kChars, kRule };
    Kind kind;
    uint32_t value;  // kChars: index into classes; kRule: rule index
  };
  struct CharClass {
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive code-point ranges
    bool negated = false;
    uint64_t ascii[2] = {0, 0};  // the answer for code points < 128, precomputed: most text is ASCII
    bool matches(uint32_t cp) const;
    bool intersects(uint32_t lo, uint32_t hi) const;  // may say true when a negated class covers [lo, hi]
  };
  std::vector<Element> elements;
  std::vector<CharClass> classes;
  std::vector<std::vector<uint32_t>> alternatives;  // [rule] -> start index of each alternative
  std::vector<std::string> rule_names;              // [rule]
  uint32_t root = 0;
};

// Where one sequence is in a grammar: the set of parse stacks that are still possible (a pushdown
// recognizer, as llama.cpp's llama_grammar_advance_stack), plus the bytes of a code point that is not
// complete yet, so a character split across tokens is followed exactly. Copyable; not thread-safe.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const Grammar> grammar);

  // Limits that keep an ambiguous grammar from blowing up; past them accept() fails with a message
  // and the matcher is dead, and a token walk treats the branch as rejected.
  static constexpr size_t kMaxStacks = 1024;         // parse stacks alive at once
  static constexpr size_t kMaxExpandSteps = 200000;  // expansion steps per character

  // Follows `bytes`. Bytes the grammar cannot take (or invalid UTF-8) fail with a message that quotes
  // the text; the matcher is then dead (nothing continues it) until reset().
  Status accept(std::string_view bytes);
  // Whether accept(bytes) would succeed; changes nothing.
  bool can_accept(std::string_view bytes) const;
  // The text so far is a whole sentence of the grammar: end of generation may come now.
  bool is_complete() const;
  // Nothing at all can follow (after a rejected accept()).
  bool is_dead() const { return state_.n_stacks() == 0; }
  void reset();

  const Grammar& grammar() const { return *grammar_; }

  // One matcher position: stacks of element indices (top at the back, always a kChars element; an
  // empty stack means the root is complete), stored flat, and a partial UTF-8 code point.
  struct State {
    std::vector<uint32_t> data;
    std::vector<uint32_t> ends;  // stack i is data[ends[i-1] .. ends[i])
    std::vector<uint64_t> hashes;  // [n_stacks]: finds duplicate stacks, and equal states in a token walk
    uint32_t partial = 0;       // bits of the code point read so far
    uint32_t partial_min = 0;   // smallest code point its length may encode (overlong forms are rejected)
    uint8_t partial_left = 0;   // continuation bytes still expected
    size_t n_stacks() const { return ends.size(); }
    std::span<const uint32_t> stack(size_t i) const {
      const size_t b = i == 0 ? 0 : ends[i - 1];
      return {data.data() + b, ends[i] - b};
    }
    void clear() {
      data.clear(), ends.clear(), hashes.clear();
      partial = partial_min = 0;
      partial_left = 0;
    }
  };
  const State& state() const { return state_; }

  // Advances `from` by one byte into `to` (which must not be `from`); false when the byte is rejected.
  // *error is set when a limit was hit. Used by accept() and by GrammarVocab's trie walk.
  bool advance_byte(const State& from, uint8_t byte, State* to, std::string* error) const;

 private:
  bool advance_code_point(const State& from, uint32_t cp, State* to, std::string* error) const;
  void expand(const uint32_t* below, size_t n_below, uint32_t pos, size_t depth, State* to, size_t* steps,
              std::string* error) const;
  void emit(const uint32_t* below, size_t n_below, uint32_t pos, bool has_top, State* to, std::string* error) const;
  bool viable_prefix(const State& s) const;

  std::shared_ptr<const Grammar> grammar_;
  State state_;
  std::string error_;  // why the matcher is dead, when a limit or a rejected text killed it
  State scratch_state_;
  mutable std::deque<std::vector<uint32_t>> scratch_;  // one working stack per expansion depth
  mutable State probe_[2];                             // can_accept's states
};

// Every token's text as bytes (token_to_piece with special = false, as `tandem run` prints it) in a byte
// trie, and the end-of-generation ids. Control tokens have empty text here, so a grammar never allows
// them (llama.cpp matches their text, e.g. "<start_of_turn>", which its output then does not show).
// Built once per vocabulary and shared, read-only, by every sampler of that model: Gemma 3's 262k
// tokens take about 0.2-0.5 s (sorting the texts dominates), so build it at load or on first use.
class GrammarVocab {
 public:
  static std::shared_ptr<const GrammarVocab> from_tokenizer(const tokenizer::Tokenizer& tok);
  // For tests and fuzzing: pieces[id] is token id's text.
  static std::shared_ptr<const GrammarVocab> from_pieces(std::vector<std::string> pieces, std::vector<int32_t> eog_ids);

  size_t n_tokens() const { return pieces_.size(); }
  const std::string& piece(int32_t id) const { return pieces_[static_cast<size_t>(id)]; }
  bool is_eog(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }

  // Sets allowed[id] = 1 for every token that `m` can take next, 0 for the others: tokens whose text
  // continues the grammar (a prefix of a character included), and end-of-generation tokens only when
  // the grammar is complete; tokens with empty text never (they would let generation loop in place).
  // Returns the number allowed. Cost: the trie nodes whose text the grammar can still take.
  size_t allowed_tokens(const GrammarMatcher& m, std::vector<uint8_t>* allowed) const;
  // The same question for one token, in O(its length).
  bool allows(const GrammarMatcher& m, int32_t id) const;

 private:
  struct Node {
    uint32_t first_child = 0, first_token = 0;  // children: nodes[first_child, +n_children)
    uint16_t n_children = 0;
    uint8_t byte = 0;  // the byte on the edge into this node
    uint32_t n_tokens = 0;  // tokens whose whole text ends here: token_ids[first_token, +n_tokens)
  };
  void build();
  struct Walk;
  void walk(Walk& w, uint32_t node, int32_t state) const;

  std::vector<std::string> pieces_;
  std::vector<int32_t> eog_ids_;  // sorted
  std::vector<Node> nodes_;       // nodes_[0] is the root (the empty text)
  std::vector<int32_t> token_ids_;
};

}  // namespace tandem::sampling
