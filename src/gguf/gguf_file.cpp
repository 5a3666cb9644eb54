// Opening GGUF models: split-part discovery and the cross-part consistency checks.
#include "gguf/gguf_file.h"

#include <cstdio>
#include <cstdlib>

namespace tandem::gguf {

std::string split_path(const std::string& prefix, int index, int count) {
  return format("%s-%05d-of-%05d.gguf", prefix.c_str(), index + 1, count);
}

bool parse_split_path(const std::string& path, std::string* prefix, int* index, int* count) {
  // Suffix "-NNNNN-of-MMMMM.gguf" is exactly 20 characters.
  constexpr size_t kSuffix = 20;
  if (path.size() <= kSuffix) return false;
  const std::string s = path.substr(path.size() - kSuffix);
  auto digits = [&](size_t from) {
    for (size_t i = from; i < from + 5; ++i)
      if (s[i] < '0' || s[i] > '9') return false;
    return true;
  };
  if (s[0] != '-' || !digits(1) || s.compare(6, 4, "-of-") != 0 || !digits(10) || s.compare(15, 5, ".gguf") != 0)
    return false;
  const int no = std::atoi(s.substr(1, 5).c_str());
  const int n = std::atoi(s.substr(10, 5).c_str());
  if (no < 1 || n < 1 || no > n) return false;
  *prefix = path.substr(0, path.size() - kSuffix);
  *index = no - 1;
  *count = n;
  return true;
}

Result<std::unique_ptr<GgufFile>> GgufFile::from_bytes(std::span<const uint8_t> bytes, const std::string& name) {
  TANDEM_ASSIGN(Header h, parse(bytes, name));
  auto out = std::make_unique<GgufFile>();
  out->path_ = name;
  out->parts_.push_back(Part{MappedFile(), std::move(h)});
  TANDEM_TRY(out->index_tensors());
  return out;
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path, const FileLoadOptions& options) {
  auto out = std::make_unique<GgufFile>();
  out->path_ = path;
  TANDEM_ASSIGN(MappedFile first, MappedFile::open(path, options));
  TANDEM_ASSIGN(Header h, parse(first.bytes(), path, options.header_only));

  const Value* count_v = h.metadata.find(kSplitCount);
  const uint64_t n_parts = count_v ? count_v->as_u64().value_or(0) : 1;
  if (count_v && (n_parts == 0 || n_parts > 99999))
    return corrupt("%s: %s is %s (expected 1 to 99999)", path.c_str(), kSplitCount, count_v->to_string().c_str());
  const uint64_t part_no = h.metadata.get_u64(kSplitNo).value_or(0);
  std::string prefix;
  int name_index = 0, name_count = 0;
  const bool split_name = parse_split_path(path, &prefix, &name_index, &name_count);
  if (part_no != 0) {
    const std::string first_name = split_name ? split_path(prefix, 0, name_count) : "the -00001-of- part";
    return invalid_argument("%s is part %llu of a split model; open the first part, %s", path.c_str(),
                            (unsigned long long)part_no + 1, first_name.c_str());
  }
  out->parts_.push_back(Part{std::move(first), std::move(h)});
  if (n_parts > 1) {
    if (!split_name || uint64_t(name_count) != n_parts)
      return invalid_argument("%s: declares %llu split parts but its name is not of the form "
                              "NAME-00001-of-%05llu.gguf, so the other parts cannot be found",
                              path.c_str(), (unsigned long long)n_parts, (unsigned long long)n_parts);
    for (int i = 1; i < int(n_parts); ++i) {
      const std::string part_path = split_path(prefix, i, int(n_parts));
      auto file = MappedFile::open(part_path, options);
      if (!file) {
        if (file.error().code() == StatusCode::NotFound)
          return not_found("%s: split part %d of %llu is missing (%s)", path.c_str(), i + 1,
                           (unsigned long long)n_parts, part_path.c_str());
        return file.error();
      }
      TANDEM_ASSIGN(Header ph, parse(file->bytes(), part_path, options.header_only));
      const auto no = ph.metadata.get_u64(kSplitNo);
      const auto count = ph.metadata.get_u64(kSplitCount);
      if (!no || *no != uint64_t(i) || !count || *count != n_parts)
        return corrupt("%s: split part mismatch: expected %s=%d and %s=%llu, found %s and %s", part_path.c_str(),
                       kSplitNo, i, kSplitCount, (unsigned long long)n_parts,
                       no ? std::to_string(*no).c_str() : "none", count ? std::to_string(*count).c_str() : "none");
      out->parts_.push_back(Part{std::move(file).value(), std::move(ph)});
    }
  }
  TANDEM_TRY(out->index_tensors());
  if (n_parts > 1) {
    const auto expected = out->metadata().get_u64(kSplitTensorsCount);
    if (expected && *expected != out->tensors_.size())
      return corrupt("%s: split model declares %llu tensors (%s) but its %llu parts hold %zu", path.c_str(),
                     (unsigned long long)*expected, kSplitTensorsCount, (unsigned long long)n_parts,
                     out->tensors_.size());
  }
  return out;
}

Status GgufFile::index_tensors() {
  size_t total = 0;
  for (const Part& p : parts_) total += p.header.tensors.size();
  tensors_.reserve(total);
  for (size_t pi = 0; pi < parts_.size(); ++pi) {
    for (const TensorInfo& t : parts_[pi].header.tensors) {
      tensors_.push_back(t);
      tensors_.back().part = uint32_t(pi);
    }
  }
  by_name_.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    auto [it, inserted] = by_name_.emplace(tensors_[i].name, i);
    if (!inserted) {
      const TensorInfo& a = tensors_[it->second];
      return corrupt("%s: tensor '%s' appears in split part %u and again in part %u", path_.c_str(),
                     a.name.c_str(), a.part + 1, tensors_[i].part + 1);
    }
  }
  return Status::ok();
}

const TensorInfo* GgufFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

uint64_t GgufFile::total_bytes() const {
  uint64_t n = 0;
  for (const Part& p : parts_) n += p.file.bytes().size();
  return n;
}

uint64_t GgufFile::tensor_bytes() const {
  uint64_t n = 0;
  for (const TensorInfo& t : tensors_) n += t.size_bytes;
  return n;
}

std::vector<std::string> GgufFile::warnings() const {
  std::vector<std::string> out;
  for (const Part& p : parts_)
    if (!p.file.warning().empty()) out.push_back(p.file.warning());
  return out;
}

}  // namespace tandem::gguf
