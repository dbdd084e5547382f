// SHA-256 for stable cell keys and sweep-file hashes, from OpenSSL's libcrypto: the same bytes
// give the same key on every machine and build (tests/sweep/cell_key_test.cc pins some).
#include <openssl/evp.h>

#include <cstdio>
#include <string>

#include "isoflop/sweep/config.h"

namespace isoflop::sweep {

std::string Sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  // EVP_Digest fails only on allocation failure or an unavailable algorithm; SHA-256 is part
  // of every libcrypto build, so an empty key would be a broken installation.
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    return "";
  }
  std::string hex(2 * size, '0');
  for (unsigned int i = 0; i < size; ++i) std::snprintf(&hex[2 * i], 3, "%02x", digest[i]);
  return hex;
}

}  // namespace isoflop::sweep
