/*
 * Build-time test of the EmosdkMaskedAttention TensorRT plugin, without TensorRT's libraries or a
 * GPU: the plugin library is opened with dlopen as TensorRT opens it (getCreators,
 * setLoggerFinder) and driven through the calls the builder and the runtime make before any
 * kernel runs: the creator and its fields, the capability interfaces, configurePlugin,
 * getOutputDataTypes, getOutputShapes, supportsFormatCombination, onShapeChange, serialisation
 * round trips, clone/attachToContext, and enqueue's refusal of mismatched shapes. The kernel
 * parameters enqueue launches with (mask stride included) come from attention_shapes.h, which
 * is checked here directly.
 *
 * Compiled against TensorRT 10.3's public headers (../shared/vendor/tensorrt-10.3.0/include in
 * this repository's CI; JetPack's on a Jetson). Usage: test_attention_plugin LIBRARY.
 * Prints one line per failed check and "N passed, M failed"; exits non-zero on any failure.
 */
#include <dlfcn.h>

#include <NvInferRuntime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attention_shapes.h"

using namespace nvinfer1;

namespace {

int gPassed = 0;
int gFailed = 0;

void check(bool ok, std::string const& what) {
  if (ok) {
    ++gPassed;
  } else {
    ++gFailed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

class Logger final : public ILogger {
 public:
  void log(Severity severity, AsciiChar const* msg) noexcept override {
    if (severity <= Severity::kERROR) errors.emplace_back(msg);
  }
  bool saw(char const* text) const {
    for (auto const& e : errors) {
      if (e.find(text) != std::string::npos) return true;
    }
    return false;
  }
  std::vector<std::string> errors;
};

class Finder final : public ILoggerFinder {
 public:
  ILogger* findLogger() override { return &logger; }
  Logger logger;
};

Dims dims(std::vector<int64_t> const& d) {
  Dims out{};
  out.nbDims = static_cast<int32_t>(d.size());
  for (size_t i = 0; i < d.size(); ++i) out.d[i] = d[i];
  return out;
}

PluginTensorDesc desc(std::vector<int64_t> const& d, DataType type = DataType::kFLOAT,
                      TensorFormat format = TensorFormat::kLINEAR) {
  PluginTensorDesc t{};
  t.dims = dims(d);
  t.type = type;
  t.format = format;
  t.scale = 1.f;
  return t;
}

DynamicPluginTensorDesc dyn(std::vector<int64_t> const& d, DataType type = DataType::kFLOAT) {
  DynamicPluginTensorDesc t{};
  t.desc = desc(d, type);
  t.min = t.max = t.opt = t.desc.dims;
  return t;
}

struct Shapes {
  std::vector<int64_t> q, k, v, mask;
};

// q [B, H, Tq, D], k and v [B, H, Tk, D], mask [B, Tk] for the given sizes
Shapes shapes(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D) {
  return {{B, H, Tq, D}, {B, H, Tk, D}, {B, H, Tk, D}, {B, Tk}};
}

struct Plugin {
  IPluginV3* v3{nullptr};
  IPluginV3OneCore* core{nullptr};
  IPluginV3OneBuild* build{nullptr};
  IPluginV3OneRuntime* runtime{nullptr};
};

Plugin interfaces(IPluginV3* p) {
  Plugin out;
  out.v3 = p;
  if (p == nullptr) return out;
  out.core = static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
  out.build =
      static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
  out.runtime =
      static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  return out;
}

int configure(Plugin const& p, Shapes const& s, bool mask) {
  std::vector<DynamicPluginTensorDesc> in = {dyn(s.q), dyn(s.k), dyn(s.v)};
  if (mask) in.push_back(dyn(s.mask));
  DynamicPluginTensorDesc out = dyn(s.q);
  return p.build->configurePlugin(in.data(), static_cast<int32_t>(in.size()), &out, 1);
}

int shapeChange(Plugin const& p, Shapes const& s, bool mask) {
  std::vector<PluginTensorDesc> in = {desc(s.q), desc(s.k), desc(s.v)};
  if (mask) in.push_back(desc(s.mask));
  PluginTensorDesc out = desc(s.q);
  return p.runtime->onShapeChange(in.data(), static_cast<int32_t>(in.size()), &out, 1);
}

float fieldScale(PluginFieldCollection const* fc) {
  for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
    if (std::strcmp(fc->fields[i].name, "scale") == 0 && fc->fields[i].data != nullptr) {
      return *static_cast<float const*>(fc->fields[i].data);
    }
  }
  return std::numeric_limits<float>::quiet_NaN();
}

// a DimsExprs entry is only copied by the plugin, never evaluated: opaque placeholders do
struct FakeExpr : IDimensionExpr {};
struct FakeBuilder : IExprBuilder {};

void testShapeRules() {
  using emosdk::TensorShape;
  auto t4 = [](int64_t a, int64_t b, int64_t c, int64_t d) {
    TensorShape t;
    t.rank = 4;
    t.d[0] = a, t.d[1] = b, t.d[2] = c, t.d[3] = d;
    return t;
  };
  auto t2 = [](int64_t a, int64_t b) {
    TensorShape t;
    t.rank = 2;
    t.d[0] = a, t.d[1] = b;
    return t;
  };
  TensorShape ok[4] = {t4(2, 4, 5, 16), t4(2, 4, 31, 16), t4(2, 4, 31, 16), t2(2, 31)};
  check(emosdk::checkAttentionShapes(ok, 4).empty(), "consistent shapes pass");
  check(emosdk::checkAttentionShapes(ok, 3).empty(), "no mask passes");
  TensorShape dyn[4] = {t4(-1, 4, -1, 16), t4(-1, 4, -1, 16), t4(-1, 4, -1, 16), t2(-1, -1)};
  check(emosdk::checkAttentionShapes(dyn, 4).empty(), "unknown (-1) sizes agree with anything");
  TensorShape bcast[4] = {ok[0], ok[1], ok[2], t2(1, 31)};
  check(emosdk::checkAttentionShapes(bcast, 4).empty(), "a [1, Tk] mask is accepted");

  // point 3: a [1, Tk] mask is read with batch stride 0; a [B, Tk] mask with stride Tk
  EmosdkAttentionParams p = emosdk::attentionParams(bcast, 4, 0.25f, true);
  check(p.mask_stride == 0, "a [1, Tk] mask has batch stride 0 (no read past its one row)");
  check(p.batch == 2 && p.heads == 4 && p.q_len == 5 && p.kv_len == 31 && p.head_dim == 16,
        "kernel sizes from q and k");
  check(p.q_stride[0] == 4 * 5 * 16 && p.k_stride[0] == 4 * 31 * 16 && p.k_stride[1] == 31 * 16,
        "contiguous strides");
  check(p.dtype == EMOSDK_F16 && p.scale == 0.25f, "dtype and scale");
  p = emosdk::attentionParams(ok, 4, 0.f, false);
  check(p.mask_stride == 31 && p.dtype == EMOSDK_F32, "a [B, Tk] mask has batch stride Tk");
  TensorShape single[4] = {t4(1, 4, 5, 16), t4(1, 4, 31, 16), t4(1, 4, 31, 16), t2(1, 31)};
  check(emosdk::attentionParams(single, 4, 0.f, false).mask_stride == 0, "B = 1: stride 0");

  struct Bad {
    TensorShape in[4];
    char const* why;
  };
  Bad const bad[] = {
      {{t4(2, 4, 5, 16), t4(2, 4, 31, 32), t4(2, 4, 31, 16), t2(2, 31)}, "head_dim of k"},
      {{t4(2, 4, 5, 16), t4(2, 4, 31, 16), t4(2, 4, 31, 64), t2(2, 31)}, "head_dim of v"},
      {{t4(2, 4, 5, 16), t4(3, 4, 31, 16), t4(2, 4, 31, 16), t2(2, 31)}, "batch of k"},
      {{t4(2, 4, 5, 16), t4(2, 4, 31, 16), t4(1, 4, 31, 16), t2(2, 31)}, "batch of v"},
      {{t4(2, 4, 5, 16), t4(2, 2, 31, 16), t4(2, 4, 31, 16), t2(2, 31)}, "heads of k"},
      {{t4(2, 4, 5, 16), t4(2, 4, 31, 16), t4(2, 4, 30, 16), t2(2, 31)}, "k has 31 keys, v 30"},
      {{t4(2, 4, 5, 16), t4(2, 4, 31, 16), t4(2, 4, 31, 16), t2(2, 30)}, "mask has 30 keys"},
      {{t4(2, 4, 5, 16), t4(2, 4, 31, 16), t4(2, 4, 31, 16), t2(3, 31)}, "mask batch is 3"},
      {{t4(2, 4, 5, 24), t4(2, 4, 31, 24), t4(2, 4, 31, 24), t2(2, 31)}, "head_dim must be"},
  };
  for (auto const& b : bad) {
    std::string const why = emosdk::checkAttentionShapes(b.in, 4);
    check(why.find(b.why) != std::string::npos, std::string("refused: ") + b.why + " (got '" +
                                                    why + "')");
  }
  TensorShape rank3[4] = {t4(2, 4, 5, 16), ok[1], ok[2], t4(2, 31, 1, 1)};
  check(emosdk::checkAttentionShapes(rank3, 4).find("mask must be rank 2") == 0, "mask rank");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::printf("usage: %s libemosdk_trt_plugin.so\n", argv[0]);
    return 2;
  }
  testShapeRules();

  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::printf("FAILED: dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  using SetLoggerFinder = void (*)(ILoggerFinder*);
  auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
  check(getCreators != nullptr && setLoggerFinder != nullptr,
        "the library exports getCreators and setLoggerFinder");
  if (getCreators == nullptr || setLoggerFinder == nullptr) return 1;
  static Finder finder;
  setLoggerFinder(&finder);
  Logger& log = finder.logger;

  int32_t n = 0;
  IPluginCreatorInterface* const* creators = getCreators(n);
  check(n == 1 && creators != nullptr && creators[0] != nullptr, "one creator");
  InterfaceInfo const info = creators[0]->getInterfaceInfo();
  check(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0, "an IPluginCreatorV3One");
  auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
  check(std::strcmp(creator->getPluginName(), "EmosdkMaskedAttention") == 0, "plugin name");
  check(std::strcmp(creator->getPluginVersion(), "1") == 0, "plugin version");
  check(std::strcmp(creator->getPluginNamespace(), "") == 0, "plugin namespace");
  PluginFieldCollection const* names = creator->getFieldNames();
  check(names != nullptr && names->nbFields == 1 && std::strcmp(names->fields[0].name, "scale") == 0 &&
            names->fields[0].type == PluginFieldType::kFLOAT32,
        "one field: scale (FLOAT32)");

  // createPlugin: the fields the ONNX parser passes
  float scale = 0.25f;
  double scale64 = 0.125;
  int32_t scaleInt = 1;
  float negative = -1.f;
  float nan = std::numeric_limits<float>::quiet_NaN();
  auto make = [&](void const* data, PluginFieldType type, TensorRTPhase phase) {
    PluginField f("scale", data, type, 1);
    PluginFieldCollection fc{1, &f};
    return creator->createPlugin("attn", &fc, phase);
  };
  IPluginV3* p64 = make(&scale64, PluginFieldType::kFLOAT64, TensorRTPhase::kBUILD);
  check(p64 != nullptr, "FLOAT64 scale accepted");
  if (p64 != nullptr) {
    Plugin i = interfaces(p64);
    check(fieldScale(i.runtime->getFieldsToSerialize()) == 0.125f, "FLOAT64 scale kept");
    delete p64;
  }
  check(make(&scaleInt, PluginFieldType::kINT32, TensorRTPhase::kBUILD) == nullptr &&
            log.saw("FLOAT32 or FLOAT64"),
        "INT32 scale refused with a message");
  check(make(&negative, PluginFieldType::kFLOAT32, TensorRTPhase::kBUILD) == nullptr,
        "negative scale refused");
  check(make(&nan, PluginFieldType::kFLOAT32, TensorRTPhase::kBUILD) == nullptr,
        "NaN scale refused");
  IPluginV3* none = creator->createPlugin("attn", nullptr, TensorRTPhase::kBUILD);
  check(none != nullptr, "no fields: default scale");
  if (none != nullptr) {
    check(fieldScale(interfaces(none).runtime->getFieldsToSerialize()) == 0.f, "default scale 0");
    delete none;
  }

  IPluginV3* raw = make(&scale, PluginFieldType::kFLOAT32, TensorRTPhase::kBUILD);
  check(raw != nullptr, "FLOAT32 scale accepted");
  if (raw == nullptr) return 1;
  Plugin p = interfaces(raw);
  check(p.core != nullptr && p.build != nullptr && p.runtime != nullptr,
        "core, build and runtime capabilities");
  check(std::strcmp(p.core->getPluginName(), "EmosdkMaskedAttention") == 0 &&
            std::strcmp(p.core->getPluginVersion(), "1") == 0,
        "core name and version");
  check(p.build->getNbOutputs() == 1, "one output");

  // configurePlugin (build time), points 3 and 5
  Shapes good = shapes(2, 4, 5, 31, 16);
  check(configure(p, good, true) == 0, "configure: consistent shapes");
  check(configure(p, good, false) == 0, "configure: no mask");
  Shapes dynamic = good;
  dynamic.q = {-1, 4, -1, 16};
  dynamic.k = dynamic.v = {-1, 4, -1, 16};
  dynamic.mask = {-1, -1};
  check(configure(p, dynamic, true) == 0, "configure: dynamic sizes");
  Shapes bcast = good;
  bcast.mask = {1, 31};
  check(configure(p, bcast, true) == 0, "configure: [1, Tk] mask");
  struct Case {
    char const* what;
    Shapes s;
    char const* message;
  };
  std::vector<Case> bad;
  {
    Shapes s = good;
    s.k = {2, 4, 31, 32};
    bad.push_back({"k head_dim 32, q 16", s, "head_dim of k is 32"});
    s = good;
    s.v = {3, 4, 31, 16};
    bad.push_back({"v batch 3, q 2", s, "batch of v is 3"});
    s = good;
    s.k = {2, 8, 31, 16};
    bad.push_back({"k heads 8, q 4", s, "heads of k is 8"});
    s = good;
    s.v = {2, 4, 30, 16};
    bad.push_back({"v keys 30, k 31", s, "k has 31 keys, v 30"});
    s = good;
    s.mask = {2, 30};
    bad.push_back({"mask keys 30, k 31", s, "mask has 30 keys, k 31"});
    s = good;
    s.mask = {3, 31};
    bad.push_back({"mask batch 3, q 2", s, "mask batch is 3"});
    s = shapes(2, 4, 5, 31, 24);
    bad.push_back({"head_dim 24", s, "head_dim must be 16, 32 or 64, got 24"});
    s = good;
    s.mask = {2, 31, 1};
    bad.push_back({"mask rank 3", s, "mask must be rank 2"});
    s = good;
    s.q = {2, 4, 5};
    bad.push_back({"q rank 3", s, "q must be rank 4"});
  }
  for (auto const& c : bad) {
    log.errors.clear();
    check(configure(p, c.s, true) == -1 && log.saw(c.message),
          std::string("configure refuses ") + c.what + " saying '" + c.message + "'");
    log.errors.clear();
    check(shapeChange(p, c.s, true) == -1 && log.saw(c.message),
          std::string("onShapeChange refuses ") + c.what);
  }
  {
    DynamicPluginTensorDesc in[2] = {dyn(good.q), dyn(good.k)};
    DynamicPluginTensorDesc out = dyn(good.q);
    check(p.build->configurePlugin(in, 2, &out, 1) == -1, "configure: 2 inputs refused");
  }

  // types, shapes and formats
  DataType inTypes[4] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kFLOAT};
  DataType outType = DataType::kFLOAT;
  check(p.build->getOutputDataTypes(&outType, 1, inTypes, 4) == 0 && outType == DataType::kHALF,
        "output type follows q");
  FakeExpr e[16];
  DimsExprs exprs[4];
  for (int i = 0; i < 4; ++i) {
    exprs[i].nbDims = i == 3 ? 2 : 4;
    for (int j = 0; j < exprs[i].nbDims; ++j) exprs[i].d[j] = &e[i * 4 + j];
  }
  DimsExprs outExpr{};
  FakeBuilder fb;
  check(p.build->getOutputShapes(exprs, 4, nullptr, 0, &outExpr, 1, fb) == 0 &&
            outExpr.nbDims == 4 && outExpr.d[0] == &e[0] && outExpr.d[3] == &e[3],
        "output shape is q's");
  auto supports = [&](int pos, DataType q, DataType t, TensorFormat f = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc io[5] = {dyn(good.q, q), dyn(good.k, q), dyn(good.v, q),
                                     dyn(good.mask, DataType::kFLOAT), dyn(good.q, q)};
    io[pos].desc.type = t;
    io[pos].desc.format = f;
    return p.build->supportsFormatCombination(pos, io, 4, 1);
  };
  check(supports(0, DataType::kFLOAT, DataType::kFLOAT), "q fp32");
  check(supports(0, DataType::kHALF, DataType::kHALF), "q fp16");
  check(!supports(0, DataType::kINT8, DataType::kINT8), "q int8 refused");
  check(!supports(0, DataType::kFLOAT, DataType::kFLOAT, TensorFormat::kCHW32), "linear only");
  check(supports(1, DataType::kHALF, DataType::kHALF), "k follows q");
  check(!supports(2, DataType::kHALF, DataType::kFLOAT), "v of another type than q refused");
  check(supports(3, DataType::kHALF, DataType::kFLOAT), "mask fp32");
  check(!supports(3, DataType::kHALF, DataType::kHALF), "mask fp16 refused");
  check(supports(4, DataType::kHALF, DataType::kHALF), "out follows q");
  {
    DynamicPluginTensorDesc io[4] = {dyn(good.q), dyn(good.k), dyn(good.v), dyn(good.q)};
    check(p.build->getWorkspaceSize(io, 3, io + 3, 1) == 0, "no workspace");
  }

  // runtime: onShapeChange, and enqueue refusing mismatched shapes before any launch
  check(shapeChange(p, good, true) == 0, "onShapeChange: consistent shapes");
  check(shapeChange(p, bcast, true) == 0, "onShapeChange: [1, Tk] mask");
  {
    Shapes s = good;
    s.mask = {2, 30};
    PluginTensorDesc in[4] = {desc(s.q), desc(s.k), desc(s.v), desc(s.mask)};
    PluginTensorDesc out = desc(s.q);
    void const* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
    void* outputs[1] = {nullptr};
    log.errors.clear();
    check(p.runtime->enqueue(in, &out, inputs, outputs, nullptr, nullptr) == -1 &&
              log.saw("enqueue: mask has 30 keys"),
          "enqueue refuses a mask whose Tk is not k's (no launch)");
  }

  // serialisation: the fields TensorRT stores, read back through the creator at run time
  PluginFieldCollection const* ser = p.runtime->getFieldsToSerialize();
  check(ser != nullptr && ser->nbFields == 1 && fieldScale(ser) == 0.25f,
        "serialised field: scale 0.25");
  IPluginV3* restored = creator->createPlugin("attn", ser, TensorRTPhase::kRUNTIME);
  check(restored != nullptr &&
            fieldScale(interfaces(restored).runtime->getFieldsToSerialize()) == 0.25f,
        "deserialised plugin has the same scale");
  delete restored;
  IPluginV3* copy = p.v3->clone();
  check(copy != nullptr && copy != p.v3 &&
            fieldScale(interfaces(copy).runtime->getFieldsToSerialize()) == 0.25f,
        "clone keeps the scale");
  if (copy != nullptr) {
    Plugin c = interfaces(copy);
    check(shapeChange(c, good, false) == 0, "the clone runs without a mask");
  }
  IPluginV3* attached = p.runtime->attachToContext(nullptr);
  check(attached != nullptr && attached != p.v3, "attachToContext gives a new plugin");
  delete attached;
  delete copy;
  delete raw;

  std::printf("%d passed, %d failed\n", gPassed, gFailed);
  return gFailed == 0 ? 0 : 1;
}
