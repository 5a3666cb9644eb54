// Loading the vocabulary from tokenizer.ggml.* metadata, with llama.cpp's defaults and fix-ups
// (src/llama-vocab.cpp, llama_vocab::impl::load) so that special tokens and flags come out the same.
#include "tokenizer/vocab.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "tokenizer/pre_tokenizer.h"

namespace tandem::tokenizer {
namespace {

using gguf::Array;
using gguf::Metadata;
using gguf::Value;
using gguf::ValueType;

// GGUF token types (gguf-py's TokenType) -> attribute bits.
uint32_t attr_from_type(int64_t type) {
  switch (type) {
    case 1: return kAttrNormal;
    case 2: return kAttrUnknown;
    case 3: return kAttrControl;
    case 4: return kAttrUserDefined;
    case 5: return kAttrUnused;
    case 6: return kAttrByte;
    default: return kAttrUndefined;
  }
}

// Texts llama.cpp recognizes as end-of-turn / end-of-generation / FIM tokens when the metadata does
// not name them (its load() lists them; "auto-detect special tokens by text").
constexpr std::array kEotTexts = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                  "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
                                  "<end_of_utterance>"};
constexpr std::array kEomTexts = {"<|eom_id|>"};
constexpr std::array kFimPreTexts = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>",
                                     "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"};
constexpr std::array kFimSufTexts = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>",
                                     "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"};
constexpr std::array kFimMidTexts = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>",
                                     "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"};
constexpr std::array kFimPadTexts = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::array kFimRepTexts = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::array kFimSepTexts = {"<|file_sep|>"};
constexpr std::array kEogTexts = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                                  "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
                                  "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
                                  "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["};

template <size_t N>
bool is_one_of(const std::string& s, const std::array<const char*, N>& list) {
  for (const char* t : list)
    if (s == t) return true;
  return false;
}

Result<const Array*> string_array(const Metadata& md, const char* key, const std::string& source) {
  const Value* v = md.find(key);
  if (!v) return not_found("%s: no '%s' in the metadata", source.c_str(), key);
  const Array* a = v->as_array();
  if (!a || a->elem_type != ValueType::String)
    return corrupt("%s: '%s' is not an array of strings", source.c_str(), key);
  return a;
}

}  // namespace

TokenId Vocab::spm_byte_token(uint8_t byte) const {
  static constexpr char kHex[] = "0123456789ABCDEF";
  const char name[6] = {'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
  if (TokenId id = find(std::string_view(name, 6)); id != kNoToken) return id;
  const char raw = char(byte);
  return find(std::string_view(&raw, 1));
}

bool Vocab::is_eog(TokenId id) const { return std::binary_search(eog_ids.begin(), eog_ids.end(), id); }

Result<Vocab> load_vocab(const Metadata& md, const std::string& source) {
  Vocab v;
  const auto model = md.get_string("tokenizer.ggml.model");
  if (!model) return not_found("%s: no tokenizer (metadata key 'tokenizer.ggml.model' is missing)", source.c_str());
  v.model_name = *model;
  v.pre_name = md.get_string("tokenizer.ggml.pre").value_or("");

  // Defaults per type, before the metadata overrides them (llama.cpp's values).
  if (v.model_name == "llama") {
    v.type = VocabType::Spm;
    v.special.bos = 1, v.special.eos = 2, v.special.unk = 0;
    v.add_space_prefix = true, v.add_bos = true;
  } else if (v.model_name == "gpt2" || v.model_name == "gemma4") {
    v.type = VocabType::Bpe;
    if (v.model_name == "gpt2") {
      v.special.bos = 11, v.special.eos = 11;
    } else {
      v.pre_name = "gemma4";  // llama.cpp ignores tokenizer.ggml.pre for this model; no default ids
    }
    v.clean_spaces = true;
    const PreTokenizerSpec* pre = find_pre_tokenizer(v.pre_name);
    if (v.pre_name.empty()) {
      v.warnings.push_back("no pre-tokenizer type in the metadata (tokenizer.ggml.pre); using 'default', as "
                           "llama.cpp does: token ids may differ from the model's own tokenizer");
    } else if (!pre) {
      v.warnings.push_back(format("unknown pre-tokenizer type '%s'; falling back to 'default' splitting: "
                                  "token ids will likely differ from llama.cpp and from the model's tokenizer",
                                  v.pre_name.c_str()));
    }
    if (!pre) pre = &default_pre_tokenizer();
    v.clean_spaces = pre->clean_spaces;
    v.ignore_merges = pre->ignore_merges;
    if (pre->add_bos) v.add_bos = true;
    if (pre->no_bos_id) v.special.bos = kNoToken;
    v.spm_style = pre->spm_style;
  } else {
    return unsupported("%s: tokenizer type '%s' (tokenizer.ggml.model) is not supported; Tandem reads 'llama' "
                       "(SentencePiece), 'gpt2' (byte-level BPE) and 'gemma4' (BPE with SentencePiece spaces)",
                       source.c_str(), v.model_name.c_str());
  }
  if (auto b = md.get_bool("tokenizer.ggml.add_space_prefix")) v.add_space_prefix = *b;

  TANDEM_ASSIGN(const Array* tokens, string_array(md, "tokenizer.ggml.tokens", source));
  const size_t n = tokens->strings.size();
  v.texts.resize(n);
  v.scores.assign(n, 0.0f);
  v.attrs.assign(n, kAttrNormal);
  if (const Value* s = md.find("tokenizer.ggml.scores")) {
    const Array* a = s->as_array();
    if (!a || (a->elem_type != ValueType::F32 && a->elem_type != ValueType::I32))
      return corrupt("%s: 'tokenizer.ggml.scores' is not an array of f32 or i32", source.c_str());
    if (a->count < n)
      return corrupt("%s: %llu scores for %zu tokens", source.c_str(), (unsigned long long)a->count, n);
    for (size_t i = 0; i < n; ++i) v.scores[i] = float(*s->array_f64(i));
  }
  if (const Value* t = md.find("tokenizer.ggml.token_type")) {
    const Array* a = t->as_array();
    if (!a || a->elem_type != ValueType::I32)
      return corrupt("%s: 'tokenizer.ggml.token_type' is not an array of i32", source.c_str());
    if (a->count < n)
      return corrupt("%s: %llu token types for %zu tokens", source.c_str(), (unsigned long long)a->count, n);
    for (size_t i = 0; i < n; ++i) v.attrs[i] = attr_from_type(*t->array_i64(i));
  }
  // Inserted one by one in id order, like llama.cpp's token_to_id, and not reserved (the bucket count sets the walk
  // order): the auto-detection below walks this map, and for equal texts in a vocab the walk order decides which
  // token is chosen.
  for (size_t i = 0; i < n; ++i) {
    std::string text = tokens->strings[i];
    if (text.empty()) text = format("[EMPTY_%zu]", i);
    v.text_to_id[text] = TokenId(i);
    v.texts[i] = std::move(text);
  }

  if (v.type == VocabType::Bpe) {
    TANDEM_ASSIGN(const Array* merges, string_array(md, "tokenizer.ggml.merges", source));
    v.merge_ranks.reserve(merges->strings.size());
    for (size_t i = 0; i < merges->strings.size(); ++i) {
      const std::string& m = merges->strings[i];
      const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      // A merge line without a space pairs two empty strings in llama.cpp: it can never match.
      if (space == std::string::npos) continue;
      v.merge_ranks.try_emplace(m, int32_t(i));
    }
  }

  struct SpecialKey {
    const char* key;
    TokenId* id;
  };
  const SpecialKey keys[] = {
      {"tokenizer.ggml.bos_token_id", &v.special.bos},       {"tokenizer.ggml.eos_token_id", &v.special.eos},
      {"tokenizer.ggml.eot_token_id", &v.special.eot},       {"tokenizer.ggml.eom_token_id", &v.special.eom},
      {"tokenizer.ggml.unknown_token_id", &v.special.unk},   {"tokenizer.ggml.seperator_token_id", &v.special.sep},
      {"tokenizer.ggml.padding_token_id", &v.special.pad},   {"tokenizer.ggml.mask_token_id", &v.special.mask},
      {"tokenizer.ggml.fim_pre_token_id", &v.special.fim_pre}, {"tokenizer.ggml.fim_suf_token_id", &v.special.fim_suf},
      {"tokenizer.ggml.fim_mid_token_id", &v.special.fim_mid}, {"tokenizer.ggml.fim_pad_token_id", &v.special.fim_pad},
      {"tokenizer.ggml.fim_rep_token_id", &v.special.fim_rep}, {"tokenizer.ggml.fim_sep_token_id", &v.special.fim_sep},
      {"tokenizer.ggml.prefix_token_id", &v.special.fim_pre}, {"tokenizer.ggml.suffix_token_id", &v.special.fim_suf},
      {"tokenizer.ggml.middle_token_id", &v.special.fim_mid},
  };
  for (const SpecialKey& k : keys) {
    if (*k.id >= 0 && size_t(*k.id) >= n) *k.id = kNoToken;  // a default outside a small vocab
    auto id = md.get_u64(k.key);
    if (!id) continue;
    if (*id >= n) v.warnings.push_back(format("%s = %llu is outside the vocabulary; ignored", k.key,
                                              (unsigned long long)*id));
    else *k.id = TokenId(*id);
  }
  if (auto b = md.get_bool("tokenizer.ggml.add_bos_token")) v.add_bos = *b;
  if (auto b = md.get_bool("tokenizer.ggml.add_eos_token")) v.add_eos = *b;
  if (v.spm_style && !v.add_bos) {  // llama.cpp overrides it for Gemma 4 (its PR 21500)
    v.add_bos = true;
    v.warnings.push_back("tokenizer.ggml.add_bos_token is false; turned on for this vocabulary, as llama.cpp does");
  }

  // Auto-detection by text, in the map's walk order as llama.cpp does; a detected token that was
  // not typed as control becomes control (so its text is matched as a special token). The map is walked only
  // where two of the texts are in it: a walk per slot was most of the load time of a 129k vocabulary.
  auto detect = [&](TokenId* slot, const auto& texts) {
    if (*slot != kNoToken) return;
    int present = 0;
    for (const char* t : texts)
      if (TokenId id = v.find(t); id != kNoToken) ++present, *slot = id;
    if (present > 1)
      for (const auto& [text, id] : v.text_to_id)
        if (is_one_of(text, texts)) {
          *slot = id;
          break;
        }
    if (*slot != kNoToken) v.attrs[*slot] |= kAttrControl;
  };
  detect(&v.special.eot, kEotTexts);
  detect(&v.special.eom, kEomTexts);
  detect(&v.special.fim_pre, kFimPreTexts);
  detect(&v.special.fim_suf, kFimSufTexts);
  detect(&v.special.fim_mid, kFimMidTexts);
  detect(&v.special.fim_pad, kFimPadTexts);
  detect(&v.special.fim_rep, kFimRepTexts);
  detect(&v.special.fim_sep, kFimSepTexts);

  for (const auto& [text, id] : v.text_to_id)
    if ((v.attrs[id] & kAttrControl) && text.find("unused") != std::string::npos) v.attrs[id] |= kAttrUnused;

  std::vector<TokenId> eog;
  for (TokenId id : {v.special.fim_pad, v.special.fim_rep, v.special.fim_sep})
    if (id != kNoToken) eog.push_back(id);
  for (const char* text : kEogTexts) {
    const TokenId id = v.find(text);
    if (id == kNoToken) continue;
    eog.push_back(id);
    v.attrs[id] |= kAttrControl;
  }
  // gpt-oss: these are always rendered (llama.cpp forces them to user-defined).
  for (const char* t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})
    if (TokenId id = v.find(t); id != kNoToken) v.attrs[id] = kAttrUserDefined;
  for (TokenId id : {v.special.eos, v.special.eot, v.special.eom})
    if (id != kNoToken) eog.push_back(id);
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  auto eog_has = [&](const char* text) {
    for (TokenId id : eog)
      if (v.texts[id] == text) return id;
    return kNoToken;
  };
  // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
  if (TokenId end = eog_has("<|end|>"); end != kNoToken &&
      ((eog_has("<|return|>") != kNoToken && (eog_has("<|call|>") != kNoToken || eog_has("<|calls|>") != kNoToken)) ||
       ((eog_has("<|call|>") != kNoToken || eog_has("<|calls|>") != kNoToken) && eog_has("<|flush|>") != kNoToken))) {
    eog.erase(std::find(eog.begin(), eog.end(), end));
    v.attrs[end] = kAttrUserDefined;
  }
  if (TokenId s = eog_has("</s>"); s != kNoToken &&
      (eog_has("<|tool_response>") != kNoToken || eog_has("<|plamo:eos|>") != kNoToken)) {
    eog.erase(std::find(eog.begin(), eog.end(), s));
    v.attrs[s] = kAttrNormal;
  }
  v.eog_ids = std::move(eog);

  // Texts matched before any splitting, longest first. std::sort on the id-ordered list with the
  // same comparison as llama.cpp keeps equal-length tokens in the same (unspecified) order.
  for (TokenId id = 0; id < TokenId(n); ++id)
    if (v.attrs[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) v.special_tokens.push_back(id);
  std::sort(v.special_tokens.begin(), v.special_tokens.end(),
            [&](TokenId a, TokenId b) { return v.texts[a].size() > v.texts[b].size(); });

  // Per-model strip attributes llama.cpp sets by name (the GGUF carries none).
  std::string name = md.get_string("general.name").value_or("");
  for (char& c : name) c = char(std::tolower(uint8_t(c)));
  const std::string arch = md.get_string("general.architecture").value_or("");
  auto set_attr = [&](const char* text, uint32_t bit, bool on) {
    if (TokenId id = v.find(text); id != kNoToken) v.attrs[id] = on ? (v.attrs[id] | bit) : (v.attrs[id] & ~bit);
  };
  const bool jina = v.pre_name.find("jina-v2-de") != std::string::npos ||
                    v.pre_name.find("jina-v2-es") != std::string::npos ||
                    v.pre_name.find("jina-v2-code") != std::string::npos ||
                    arch.find("nomic-bert-moe") != std::string::npos || arch.find("jina-bert-v3") != std::string::npos;
  if (jina) {
    set_attr("<mask>", kAttrLstrip, true);
  } else if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (TokenId id : v.special_tokens) v.attrs[id] |= kAttrRstrip;
    set_attr("</s>", kAttrRstrip, true);
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) set_attr(t, kAttrRstrip, false);
  } else if (name.find("modern-bert") != std::string::npos) {
    set_attr("[MASK]", kAttrLstrip, true);
  }
  return v;
}

}  // namespace tandem::tokenizer
