// fastprotect in C++: load an exported TorchScript graph (`fastprotect export MODEL --out
// model.pt`), read a PPM/PGM image, protect it, write a binary PPM.
//
//   protect MODEL.pt INPUT.ppm OUTPUT.ppm
//
// Build with tools/cpp/build.sh (one g++ line against the libtorch inside the installed
// torch wheel). The graph takes 1x3xHxW floats in [0, 1] and returns the protected image;
// encoder, routing, assignment, strength map and addition all run inside it.

#include <torch/script.h>

#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;  // height * width * 3, row-major
};

// Next header token of a PNM file, skipping whitespace and '#' comments.
std::string next_token(std::istream& in) {
  std::string token;
  int c = in.get();
  while (c != EOF) {
    if (c == '#') {  // a comment ends the token before it, as whitespace does
      while (c != EOF && c != '\n' && c != '\r') c = in.get();
      if (!token.empty()) break;
    } else if (std::isspace(c)) {
      if (!token.empty()) break;
    } else {
      token.push_back(static_cast<char>(c));
    }
    c = in.get();
  }
  if (token.empty()) throw std::runtime_error("truncated header");
  return token;
}

int header_int(std::istream& in, const char* what) {
  const std::string token = next_token(in);
  std::size_t used = 0;
  long value = -1;
  try {
    value = std::stol(token, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != token.size() || value <= 0 || value > 1 << 20) {
    throw std::runtime_error(std::string("bad ") + what + " '" + token + "'");
  }
  return static_cast<int>(value);
}

// Binary PPM (P6, RGB) or PGM (P5, gray -> RGB); maxval up to 65535 (scaled to 8 bits).
Image read_pnm(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open for reading");
  const std::string magic = next_token(in);
  if (magic != "P6" && magic != "P5") {
    throw std::runtime_error("not a binary PPM/PGM (magic '" + magic + "', want P6 or P5)");
  }
  const int channels = magic == "P6" ? 3 : 1;
  Image image;
  image.width = header_int(in, "width");
  image.height = header_int(in, "height");
  const int maxval = header_int(in, "maxval");
  if (maxval > 65535) throw std::runtime_error("maxval above 65535");
  const std::size_t bytes_per_sample = maxval > 255 ? 2 : 1;
  const std::size_t samples = static_cast<std::size_t>(image.width) * image.height * channels;
  std::vector<unsigned char> raw(samples * bytes_per_sample);
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  if (static_cast<std::size_t>(in.gcount()) != raw.size()) {
    throw std::runtime_error("truncated pixel data");
  }
  image.rgb.resize(static_cast<std::size_t>(image.width) * image.height * 3);
  for (std::size_t i = 0; i < samples; ++i) {
    unsigned value = bytes_per_sample == 2 ? (raw[2 * i] << 8) | raw[2 * i + 1] : raw[i];
    const auto v8 = static_cast<std::uint8_t>((value * 255u + maxval / 2) / maxval);
    if (channels == 3) {
      image.rgb[i] = v8;
    } else {
      image.rgb[3 * i] = image.rgb[3 * i + 1] = image.rgb[3 * i + 2] = v8;
    }
  }
  return image;
}

// Binary PPM, written to a temporary file of this process's own and linked into place, so
// no partial output is left and an output that appeared meanwhile is not replaced.
void write_ppm(const std::filesystem::path& path, const Image& image) {
  const std::filesystem::path tmp = path.string() + ".part" + std::to_string(::getpid());
  std::FILE* out = std::fopen(tmp.c_str(), "wbx");  // "x": never an existing file
  if (out == nullptr) throw std::runtime_error("cannot create " + tmp.string());
  const std::string header =
      "P6\n" + std::to_string(image.width) + " " + std::to_string(image.height) + "\n255\n";
  const bool written =
      std::fwrite(header.data(), 1, header.size(), out) == header.size() &&
      std::fwrite(image.rgb.data(), 1, image.rgb.size(), out) == image.rgb.size();
  if (std::fclose(out) != 0 || !written) {
    std::filesystem::remove(tmp);
    throw std::runtime_error("write failed");
  }
  std::error_code error;
  std::filesystem::create_hard_link(tmp, path, error);  // fails if the output exists
  if (error && error != std::errc::file_exists) {
    // no hard links here (FAT, exFAT): rename instead, after one more check
    if (std::filesystem::exists(path)) {
      error = std::make_error_code(std::errc::file_exists);
    } else {
      std::filesystem::rename(tmp, path, error);
      if (!error) return;
    }
  }
  std::filesystem::remove(tmp);
  if (error == std::errc::file_exists) throw std::runtime_error("exists; refusing to overwrite");
  if (error) throw std::runtime_error("cannot write: " + error.message());
}

Image protect(torch::jit::script::Module& graph, const Image& image) {
  torch::NoGradGuard no_grad;
  // HxWx3 uint8 -> 1x3xHxW float in [0, 1]
  torch::Tensor x = torch::from_blob(const_cast<std::uint8_t*>(image.rgb.data()),
                                     {image.height, image.width, 3}, torch::kUInt8)
                        .permute({2, 0, 1})
                        .unsqueeze(0)
                        .to(torch::kFloat32)
                        .div(255);
  torch::Tensor y = graph.forward({x}).toTensor();
  // Same rounding as the Python path: round(255 * clamp(y, 0, 1)).
  y = y.clamp(0, 1).mul(255).round().to(torch::kUInt8).squeeze(0).permute({1, 2, 0}).contiguous();
  Image out{image.width, image.height, {}};
  out.rgb.assign(y.data_ptr<std::uint8_t>(), y.data_ptr<std::uint8_t>() + y.numel());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt INPUT.ppm OUTPUT.ppm\n";
    return 2;
  }
  const std::filesystem::path model_path = argv[1], input = argv[2], output = argv[3];
  if (std::filesystem::exists(output)) {
    std::cerr << "protect: " << output.string() << ": exists; refusing to overwrite\n";
    return 2;
  }
  if (!std::filesystem::is_regular_file(model_path)) {
    std::cerr << "protect: " << model_path.string() << ": no such file\n";
    return 2;
  }
  torch::jit::script::Module graph;
  try {
    graph = torch::jit::load(model_path.string());
    graph.eval();
  } catch (const std::exception& e) {
    std::cerr << "protect: " << model_path.string() << ": cannot load the graph";
    if (model_path.extension() == ".pt2") {
      std::cerr << " (this example runs TorchScript graphs: export with --out model.pt; a .pt2 "
                   "graph runs with AOTInductor or ExecuTorch, see docs/embedding.md)";
    } else {
      std::cerr << " (a TorchScript file from `fastprotect export --out model.pt`?)";
    }
    // libtorch's message runs over many lines: its first one says what went wrong
    const std::string reason = e.what();
    std::cerr << ": " << reason.substr(0, reason.find('\n')) << "\n";
    return 2;
  }
  Image image;
  try {
    image = read_pnm(input);
  } catch (const std::exception& e) {
    std::cerr << "protect: " << input.string() << ": " << e.what() << "\n";
    return 1;
  }
  try {
    write_ppm(output, protect(graph, image));
  } catch (const std::exception& e) {
    std::cerr << "protect: " << output.string() << ": " << e.what() << "\n";
    return 1;
  }
  std::cout << "protect: wrote " << output.string() << " (" << image.width << "x"
            << image.height << ")\n";
  return 0;
}
