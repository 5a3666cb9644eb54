// tandem tokenize: a text's token ids under a model's tokenizer, printed like llama-tokenize
// (`[1, 2, 3]` with --ids, otherwise one "id -> 'piece'" line per token).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/args.h"
#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

// llama.cpp's escape handling for prompts (common/common.cpp, string_process_escapes): \n \r \t \' \"
// \\ and \xHH; any other backslash stays as written. Kept identical so the same command line gives
// the same text.
std::string process_escapes(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\' || i + 1 >= in.size()) {
      out += in[i];
      continue;
    }
    const char e = in[++i];
    switch (e) {
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      default:
        // \xHH needs two hex digits and (a quirk kept for equality) one more character after them.
        if (e == 'x' && i + 2 < in.size() && std::isxdigit(uint8_t(in[i + 1])) && std::isxdigit(uint8_t(in[i + 2]))) {
          out += char(std::strtol(in.substr(i + 1, 2).c_str(), nullptr, 16));
          i += 2;
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

}  // namespace

int tokenize_main(int argc, char** argv) {
  std::string model, prompt, file;
  bool ids = false, no_bos = false, no_parse_special = false, no_escape = false, from_stdin = false,
       show_count = false;
  ArgParser args("tokenize", "tandem tokenize -m MODEL (-p TEXT | -f FILE | --stdin) [--ids] [--no-bos] [--no-parse-special]",
                 "Tokenizes a text with the model's own tokenizer (tokenizer.ggml.* metadata; a vocab-only\n"
                 "GGUF is enough) and prints the token ids, the same ids llama.cpp's llama-tokenize prints.");
  args.string("-m,--model", "FILE", "model or vocab-only GGUF file", &model);
  args.string("-p,--prompt", "TEXT", "the text to tokenize", &prompt);
  args.string("-f,--file", "FILE", "read the text from a file (bytes as they are, trailing newline included)", &file);
  args.flag("--stdin", "read the text from standard input", &from_stdin);
  args.flag("--ids", "print only the ids, as one list: [1, 2, 3]", &ids);
  args.flag("--no-bos", "do not add BOS (or EOS) even where the model asks for them", &no_bos);
  args.flag("--no-parse-special", "leave control-token texts such as <|im_end|> as plain text", &no_parse_special);
  args.flag("--no-escape", "take \\n, \\t, \\xHH ... in the text literally (by default they are processed, as in llama-tokenize)",
            &no_escape);
  args.flag("--show-count", "print the number of tokens at the end", &show_count);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (model.empty()) return fail(invalid_argument("tokenize: no model given (use -m FILE)"));
  if (int(!prompt.empty()) + int(!file.empty()) + int(from_stdin) > 1)
    return fail(invalid_argument("tokenize: give the text one way only: -p, -f or --stdin"));

  std::string text = prompt;
  if (!file.empty() || from_stdin) {
    std::stringstream buffer;
    if (from_stdin) {
      buffer << std::cin.rdbuf();
    } else {
      std::ifstream in(file, std::ios::binary);
      if (!in) return fail(io_error("tokenize: cannot open '%s'", file.c_str()));
      buffer << in.rdbuf();
    }
    text = buffer.str();
  } else if (prompt.empty()) {
    return fail(invalid_argument("tokenize: no text given (use -p TEXT, -f FILE or --stdin)"));
  }
  if (!no_escape) text = process_escapes(text);

  auto tok = tokenizer::Tokenizer::open(model);
  if (!tok) return fail(tok.error());
  for (const std::string& w : (*tok)->warnings()) std::fprintf(stderr, "warning: %s: %s\n", model.c_str(), w.c_str());

  const bool add_special = (*tok)->vocab().add_bos && !no_bos;
  const auto tokenized = (*tok)->tokenize(text, add_special, !no_parse_special);
  if (!tokenized) return fail(tokenized.error());
  const std::vector<tokenizer::TokenId>& tokens = *tokenized;
  if (ids) {
    std::string line = "[";
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) line += ", ";
      line += std::to_string(tokens[i]);
    }
    std::printf("%s]\n", line.c_str());
  } else {
    for (const tokenizer::TokenId id : tokens) {
      const std::string piece = (*tok)->token_to_piece(id, true);
      std::printf("%6d -> '", id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::printf("'\n");
    }
  }
  if (show_count) std::printf("Total number of tokens: %zu\n", tokens.size());
  return 0;
}

}  // namespace tandem::cli
