// Memory-mapped token files (text bytes, nanoGPT .bin, llm.c shards) and the synthetic source
// behind one TokenSource interface. File checks happen once, at open; errors name the file.
#include "isoflop/trainer/data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "isoflop/trainer/synthetic.h"

namespace isoflop::trainer {

namespace {

// A read-only memory map of a whole file; unmapped on destruction. Move-only.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return Status::NotFound(path + ": cannot open (" + std::strerror(errno) +
                              "); check the path in run.json");
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return Status::IoError(path + ": cannot stat");
    }
    auto f = std::unique_ptr<MappedFile>(new MappedFile());
    f->path_ = path;
    f->size_ = static_cast<size_t>(st.st_size);
    if (f->size_ > 0) {
      void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        return Status::IoError(path + ": mmap failed (" + std::strerror(errno) + ")");
      }
      f->data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
    return f;
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A run of tokens inside a mapped file.
struct Segment {
  const MappedFile* file;
  const uint8_t* base;
  int64_t n_tokens;
  int width;  // bytes per token: 1, 2 or 4 (little-endian)
};

// Uniformly random windows over every start position of a set of segments.
class SegmentSampler {
 public:
  // InvalidArgument when no segment holds a full window.
  Status Init(std::vector<Segment> segments, int max_len, int vocab, const std::string& what) {
    segments_ = std::move(segments);
    vocab_ = vocab;
    int64_t cum = 0;
    for (const Segment& s : segments_) {
      cum += WindowStarts({s.n_tokens}, max_len);
      cum_starts_.push_back(cum);
    }
    if (cum == 0) {
      std::vector<std::string> files;
      for (const Segment& s : segments_) files.push_back(s.file->path());
      return NoWindow(what, files, max_len);
    }
    max_len_ = max_len;
    return Status::Ok();
  }

  Status Sample(Rng& rng, int len, int64_t* out) const {
    // Starts are drawn over max_len windows so that the position distribution does not depend
    // on len (the partial last step uses a shorter len).
    const uint64_t k = rng.Below(static_cast<uint64_t>(cum_starts_.back()));
    const size_t i =
        std::upper_bound(cum_starts_.begin(), cum_starts_.end(), static_cast<int64_t>(k)) -
        cum_starts_.begin();
    const int64_t start = static_cast<int64_t>(k) - (i == 0 ? 0 : cum_starts_[i - 1]);
    const Segment& s = segments_[i];
    for (int t = 0; t < len; ++t) {
      const uint8_t* p = s.base + (start + t) * s.width;
      uint32_t v = p[0];
      if (s.width >= 2) v |= uint32_t{p[1]} << 8;
      if (s.width == 4) v |= (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
      if (static_cast<int64_t>(v) >= vocab_)
        return TokenIdTooLarge(s.file->path(), v, start + t, vocab_);
      out[t] = v;
    }
    return Status::Ok();
  }

 private:
  std::vector<Segment> segments_;
  std::vector<int64_t> cum_starts_;
  int vocab_ = 0;
  int max_len_ = 0;
};

class FileSource : public TokenSource {
 public:
  Status SampleTrain(Rng& rng, int len, int64_t* out) override {
    return train_.Sample(rng, len, out);
  }
  Status SampleVal(Rng& rng, int len, int64_t* out) override { return val_.Sample(rng, len, out); }

  std::vector<std::unique_ptr<MappedFile>> files;
  SegmentSampler train_, val_;
};

class SyntheticSource : public TokenSource {
 public:
  explicit SyntheticSource(SyntheticLanguage lang) : lang_(std::move(lang)) {}
  Status SampleTrain(Rng& rng, int len, int64_t* out) override {
    lang_.Sample(rng, len, out);
    return Status::Ok();
  }
  Status SampleVal(Rng& rng, int len, int64_t* out) override {
    lang_.Sample(rng, len, out);
    return Status::Ok();
  }
  int MinValContext() const override { return 2; }
  std::optional<double> EntropyNats() const override { return lang_.EntropyRate(); }

 private:
  SyntheticLanguage lang_;
};

int32_t ReadLe32(const uint8_t* p) {
  return static_cast<int32_t>(uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
                              (uint32_t{p[3]} << 24));
}

// Checks an llm.c shard's header and size; returns its token segment.
Result<Segment> LlmcSegment(const MappedFile& f) {
  const size_t header_bytes = kLlmcHeaderInts * 4;
  if (f.size() < header_bytes) {
    return Status::Corrupt(f.path() + ": " + std::to_string(f.size()) +
                           " bytes is shorter than the 1024-byte llm.c header; is this an "
                           "llm.c shard?");
  }
  const int32_t magic = ReadLe32(f.data());
  const int32_t version = ReadLe32(f.data() + 4);
  const int32_t count = ReadLe32(f.data() + 8);
  int width = 0;
  if (magic == kLlmcMagicV1) {
    if (version != 1) {
      return Status::Corrupt(f.path() + ": magic 20240520 expects version 1, header says " +
                             std::to_string(version));
    }
    width = 2;
  } else if (magic == kLlmcMagicV7) {
    if (version != 7) {
      return Status::Corrupt(f.path() + ": magic 20240801 expects version 7, header says " +
                             std::to_string(version));
    }
    width = 4;
  } else {
    return Status::Corrupt(f.path() + ": bad magic " + std::to_string(magic) +
                           " (expected 20240520 or 20240801): not an llm.c token shard");
  }
  if (count < 0) return Status::Corrupt(f.path() + ": negative token count in header");
  const size_t expected = header_bytes + size_t(count) * width;
  if (f.size() != expected) {
    return Status::Corrupt(f.path() + ": header says " + std::to_string(count) + " tokens (" +
                           std::to_string(expected) + " bytes) but the file has " +
                           std::to_string(f.size()) + " bytes (truncated or wrong version?)");
  }
  return Segment{&f, f.data() + header_bytes, count, width};
}

// Checks a nanoGPT .bin file's size; returns its token segment.
Result<Segment> BinSegment(const MappedFile& f) {
  if (f.size() % 2 != 0) {
    return Status::Corrupt(f.path() + ": size " + std::to_string(f.size()) +
                           " is odd; a nanoGPT .bin holds uint16 tokens (2 bytes each)");
  }
  return Segment{&f, f.data(), static_cast<int64_t>(f.size() / 2), 2};
}

// The largest of `n` tokens of sizeof(T) bytes, and the first index holding `v`. The files are
// little-endian, as is every host this builds for.
static_assert(std::endian::native == std::endian::little);
template <typename T>
uint32_t MaxToken(const uint8_t* base, int64_t n) {
  T m = 0;
  for (int64_t i = 0; i < n; ++i) {  // a max reduction: vectorised
    T v;
    std::memcpy(&v, base + i * sizeof(T), sizeof(T));
    m = v > m ? v : m;
  }
  return m;
}
template <typename T>
int64_t FirstToken(const uint8_t* base, int64_t n, uint32_t id) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, base + i * sizeof(T), sizeof(T));
    if (v == id) return i;
  }
  return -1;
}

Result<std::unique_ptr<TokenSource>> OpenFiles(const DataConfig& c, int max_len, int vocab) {
  auto src = std::make_unique<FileSource>();
  auto open = [&](const std::string& path) -> Result<const MappedFile*> {
    ISOFLOP_ASSIGN_OR_RETURN(auto f, MappedFile::Open(path));
    src->files.push_back(std::move(f));
    return src->files.back().get();
  };
  std::vector<Segment> train, val;
  switch (c.source) {
    case DataSource::kText:
      for (const std::string& path : c.paths) {
        ISOFLOP_ASSIGN_OR_RETURN(const MappedFile* f, open(path));
        const int64_t n = static_cast<int64_t>(f->size());
        const int64_t n_val = TextValTokens(n, c.val_fraction);
        train.push_back(Segment{f, f->data(), n - n_val, 1});
        val.push_back(Segment{f, f->data() + (n - n_val), n_val, 1});
      }
      break;
    case DataSource::kBin:
      for (const auto& [path, out] : {std::pair{c.train_bin, &train}, std::pair{c.val_bin, &val}}) {
        ISOFLOP_ASSIGN_OR_RETURN(const MappedFile* f, open(path));
        ISOFLOP_ASSIGN_OR_RETURN(Segment s, BinSegment(*f));
        out->push_back(s);
      }
      break;
    case DataSource::kLlmc:
      for (const auto& [paths, out] :
           {std::pair{&c.train_shards, &train}, std::pair{&c.val_shards, &val}}) {
        for (const std::string& path : *paths) {
          ISOFLOP_ASSIGN_OR_RETURN(const MappedFile* f, open(path));
          ISOFLOP_ASSIGN_OR_RETURN(Segment s, LlmcSegment(*f));
          out->push_back(s);
        }
      }
      break;
    case DataSource::kSynthetic:
      return Status::Internal("OpenFiles called for synthetic data");
  }
  ISOFLOP_RETURN_IF_ERROR(src->train_.Init(train, max_len, vocab, "training data"));
  ISOFLOP_RETURN_IF_ERROR(src->val_.Init(val, max_len, vocab, "validation data"));
  return std::unique_ptr<TokenSource>(std::move(src));
}

Status WriteAll(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Status::IoError(path + ": cannot create (" + std::strerror(errno) + ")");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) return Status::IoError(path + ": write failed");
  return Status::Ok();
}

void PutLe(std::vector<uint8_t>& out, uint32_t v, int width) {
  for (int i = 0; i < width; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

Result<std::unique_ptr<TokenSource>> OpenTokenSource(const DataConfig& c, int max_len,
                                                     int vocab_size) {
  if (c.source == DataSource::kSynthetic) {
    if (c.vocab > vocab_size) {
      return Status::InvalidArgument("synthetic vocab " + std::to_string(c.vocab) +
                                     " exceeds model.vocab_size");
    }
    ISOFLOP_ASSIGN_OR_RETURN(SyntheticLanguage lang, SyntheticLanguage::Build(c));
    return std::unique_ptr<TokenSource>(std::make_unique<SyntheticSource>(std::move(lang)));
  }
  return OpenFiles(c, max_len, vocab_size);
}

Result<TokenFileSummary> SummarizeTokenFile(const std::string& path, DataSource source,
                                            const std::function<void(int64_t, int64_t)>& progress) {
  if (source != DataSource::kBin && source != DataSource::kLlmc) {
    return Status::InvalidArgument("SummarizeTokenFile reads .bin files and llm.c shards only");
  }
  ISOFLOP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> f, MappedFile::Open(path));
  ISOFLOP_ASSIGN_OR_RETURN(Segment seg,
                           source == DataSource::kBin ? BinSegment(*f) : LlmcSegment(*f));
  if (f->size() > 0) ::madvise(const_cast<uint8_t*>(f->data()), f->size(), MADV_SEQUENTIAL);
  TokenFileSummary out;
  out.tokens = seg.n_tokens;
  // Chunks of 64 MiB: progress between them, and where the maximum first is found in the
  // chunk that raised it (a second pass over that chunk only).
  const int64_t chunk = (int64_t{64} << 20) / seg.width;
  const int64_t header = seg.base - f->data();
  for (int64_t at = 0; at < seg.n_tokens; at += chunk) {
    const int64_t n = std::min(chunk, seg.n_tokens - at);
    const uint8_t* p = seg.base + at * seg.width;
    const uint32_t m = seg.width == 2 ? MaxToken<uint16_t>(p, n) : MaxToken<uint32_t>(p, n);
    if (out.max_at < 0 || m > out.max_id) {
      out.max_id = m;
      out.max_at = at + (seg.width == 2 ? FirstToken<uint16_t>(p, n, m)
                                        : FirstToken<uint32_t>(p, n, m));
    }
    if (progress) progress(header + (at + n) * seg.width, static_cast<int64_t>(f->size()));
  }
  if (progress && seg.n_tokens == 0) progress(f->size(), f->size());
  return out;
}

Status TokenIdTooLarge(const std::string& path, uint32_t id, int64_t at, int vocab_size) {
  return Status::Corrupt(path + ": token id " + std::to_string(id) + " at token " +
                         std::to_string(at) + " is >= model.vocab_size " +
                         std::to_string(vocab_size) +
                         "; raise model.vocab_size to the tokenizer's vocabulary");
}

int64_t TextValTokens(int64_t bytes, double val_fraction) {
  return static_cast<int64_t>(std::ceil(val_fraction * bytes));
}

int64_t WindowStarts(const std::vector<int64_t>& file_tokens, int max_len) {
  int64_t starts = 0;
  for (int64_t n : file_tokens) starts += std::max<int64_t>(0, n - max_len + 1);
  return starts;
}

Status NoWindow(const std::string& what, const std::vector<std::string>& files, int max_len) {
  std::string list;
  for (const std::string& f : files) list += (list.empty() ? "" : ", ") + f;
  return Status::InvalidArgument(what + " (" + list + ") holds no window of " +
                                 std::to_string(max_len) +
                                 " tokens: give more data or a shorter seq_len");
}

Status WriteLlmcShard(const std::string& path, const std::vector<uint32_t>& tokens, int version) {
  if (version != 1 && version != 7) return Status::InvalidArgument("llm.c version must be 1 or 7");
  std::vector<uint8_t> bytes;
  std::vector<int32_t> header(kLlmcHeaderInts, 0);
  header[0] = version == 1 ? kLlmcMagicV1 : kLlmcMagicV7;
  header[1] = version;
  header[2] = static_cast<int32_t>(tokens.size());
  for (int32_t h : header) PutLe(bytes, static_cast<uint32_t>(h), 4);
  for (uint32_t t : tokens) PutLe(bytes, t, version == 1 ? 2 : 4);
  return WriteAll(path, bytes);
}

Status WriteBinTokens(const std::string& path, const std::vector<uint16_t>& tokens) {
  std::vector<uint8_t> bytes;
  for (uint16_t t : tokens) PutLe(bytes, t, 2);
  return WriteAll(path, bytes);
}

}  // namespace isoflop::trainer
