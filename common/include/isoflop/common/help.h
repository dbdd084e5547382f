// The --help layout of isoflop's programs: CLI11's, with each description word-wrapped to fit
// 100 columns beside its option, an option's "needs"/"excludes" said at the end of its
// description instead of inside the option column, and a validator's text (INT:NONNEGATIVE,
// INT:INT in [1 - 1024]) left out of the type name (a value out of range is refused with it);
// positionals named in capitals (FILE, NAME).
// Header-only: the trainer builds without the CLI's library.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <memory>
#include <set>
#include <sstream>
#include <string>

namespace isoflop {

class HelpFormatter : public CLI::Formatter {
 public:
  static constexpr size_t kWidth = 100;  // the whole line
  static constexpr size_t kColumn = 30;  // where descriptions start

  HelpFormatter() { column_width(kColumn); }

  // Appends `text` at column *col of *out, wrapped at word boundaries to kWidth; each line
  // after the first (text's own newlines are kept) starts at column `indent`.
  static void Append(std::string* out, size_t* col, size_t indent, const std::string& text) {
    const auto newline = [&] {
      *out += "\n";
      out->append(indent, ' ');
      *col = indent;
    };
    size_t start = 0;
    for (bool first_line = true;; first_line = false) {
      const size_t end = std::min(text.find('\n', start), text.size());
      if (!first_line) newline();
      std::istringstream words(text.substr(start, end - start));
      std::string word;
      for (bool first_word = true; words >> word; first_word = false) {
        if (!first_word && *col + 1 + word.size() > kWidth) {
          newline();
        } else if (!first_word) {
          *out += ' ';
          ++*col;
        }
        *out += word;
        *col += word.size();
      }
      if (end >= text.size()) break;
      start = end + 1;
    }
  }

  // `name` in the left column and `text` beside it from kColumn (on the next line when the name
  // reaches into it).
  static std::string Row(const std::string& name, const std::string& text) {
    std::string out = "  " + name;
    size_t col = out.size();
    if (!text.empty()) {
      if (col >= kColumn) {
        out += "\n";
        col = 0;
      }
      out.append(kColumn - col, ' ');
      col = kColumn;
      Append(&out, &col, kColumn, text);
    }
    return out + "\n";
  }

  // `text` from column 0, wrapped.
  static std::string Wrap(const std::string& text) {
    std::string out;
    size_t col = 0;
    Append(&out, &col, 0, text);
    return out;
  }

  std::string make_description(const CLI::App* app) const override {
    return Wrap(CLI::Formatter::make_description(app));
  }

  std::string make_footer(const CLI::App* app) const override {
    return Wrap(CLI::Formatter::make_footer(app));
  }

  std::string make_option(const CLI::Option* opt, bool is_positional) const override {
    return Row(make_option_name(opt, is_positional) + make_option_opts(opt), make_option_desc(opt));
  }

  std::string make_subcommand(const CLI::App* sub) const override {
    return Row(sub->get_display_name(true), sub->get_description());
  }

  // A positional is named in capitals (FILE, NAME), in its row and the usage line, and its name
  // stands for its type.
  std::string make_option_name(const CLI::Option* opt, bool is_positional) const override {
    std::string name = CLI::Formatter::make_option_name(opt, is_positional);
    if (is_positional)
      for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return name;
  }

  std::string make_option_opts(const CLI::Option* opt) const override {
    if (!opt->get_option_text().empty()) return " " + opt->get_option_text();
    std::string out;
    if (opt->get_positional() && !opt->nonpositional()) {
      if (opt->get_expected_max() == CLI::detail::expected_max_vector_size) out += " ...";
      if (opt->get_required()) out += " REQUIRED";
      return out;
    }
    if (opt->get_type_size() != 0) {
      const std::string type = opt->get_type_name().substr(0, opt->get_type_name().find(':'));
      if (!type.empty()) out += " " + type;
      if (!opt->get_default_str().empty()) out += "=" + opt->get_default_str();
      if (opt->get_expected_max() == CLI::detail::expected_max_vector_size)
        out += " ...";
      else if (opt->get_expected_min() > 1)
        out += " x " + std::to_string(opt->get_expected());
      if (opt->get_required()) out += " REQUIRED";
    }
    if (!opt->get_envname().empty()) out += " ($" + opt->get_envname() + ")";
    return out;
  }

  std::string make_option_desc(const CLI::Option* opt) const override {
    std::string out = opt->get_description();
    const auto names = [](const std::set<CLI::Option*>& set) {
      std::string s;
      for (const CLI::Option* o : set) s += (s.empty() ? "" : ", ") + o->get_name();
      return s;
    };
    if (!opt->get_needs().empty()) out += " (with " + names(opt->get_needs()) + ")";
    if (!opt->get_excludes().empty()) out += " (not with " + names(opt->get_excludes()) + ")";
    return out;
  }
};

// Before the first subcommand is added: subcommands take their parent's formatter.
inline void UseHelpFormatter(CLI::App& app) { app.formatter(std::make_shared<HelpFormatter>()); }

}  // namespace isoflop
