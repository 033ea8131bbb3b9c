/*
 * TensorRT plugin "EmosdkMaskedAttention" (version "1", empty namespace): the fused masked
 * attention of emosdk_attention.cu behind the TensorRT 10 IPluginV3 interface.
 *
 * Inputs:  0 q    [B, H, Tq, D]  fp32 or fp16, linear
 *          1 k    [B, H, Tk, D]  same type as q
 *          2 v    [B, H, Tk, D]  same type as q
 *          3 mask [B, Tk]        fp32, != 0 = present (optional: 3 inputs = no mask)
 * Output:  0 out  [B, H, Tq, D]  same type as q
 * Field:   scale (fp32, default 0 = 1/sqrt(D))
 *
 * D must be 16, 32 or 64. q, k, v and the mask must agree (B, H, D, Tk): configurePlugin refuses a
 * mismatch at build time, onShapeChange and enqueue at run time (attention_shapes.h), since each
 * would be an out-of-bounds read in the kernel. The ONNX node that export/attention.py emits has op_type
 * EmosdkMaskedAttention, so TensorRT's ONNX parser finds this creator once the library is
 * loaded (trtexec --dynamicPlugins=libemosdk_trt_plugin.so, or
 * trt.get_plugin_registry().load_library(path) in Python). The library exports getCreators()
 * and setLoggerFinder() and needs no link against libnvinfer.
 *
 * Built only when the TensorRT headers are found (kernels/CMakeLists.txt).
 */
#include <cuda_runtime_api.h>

#include <NvInferRuntime.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "attention_shapes.h"
#include "emosdk_attention.h"

namespace emosdk {
namespace {

using namespace nvinfer1;

constexpr char const* kPluginName = "EmosdkMaskedAttention";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";

class LoggerFinder {
 public:
  void set(ILoggerFinder* finder) {
    std::lock_guard<std::mutex> lock(mMutex);
    if (mFinder == nullptr) mFinder = finder;
  }
  void log(ILogger::Severity severity, std::string const& msg) {
    std::lock_guard<std::mutex> lock(mMutex);
    ILogger* logger = mFinder != nullptr ? mFinder->findLogger() : nullptr;
    if (logger != nullptr) logger->log(severity, (std::string(kPluginName) + ": " + msg).c_str());
  }

 private:
  std::mutex mMutex;
  ILoggerFinder* mFinder{nullptr};
};

LoggerFinder gLogger;

void logError(std::string const& msg) { gLogger.log(ILogger::Severity::kERROR, msg); }

TensorShape shapeOf(Dims const& dims) {
  TensorShape t;
  t.rank = dims.nbDims;
  for (int32_t i = 0; i < dims.nbDims && i < 4; ++i) t.d[i] = dims.d[i];
  return t;
}

/* "" when the inputs fit together (attention_shapes.h); else the reason. */
template <typename Desc, typename GetDims>
std::string checkInputs(Desc const* in, int32_t nbInputs, GetDims dimsOf, TensorShape* shapes) {
  if ((nbInputs != 3 && nbInputs != 4) || in == nullptr) {
    return "expects 3 or 4 inputs (q, k, v[, mask])";
  }
  for (int32_t i = 0; i < nbInputs; ++i) shapes[i] = shapeOf(dimsOf(in[i]));
  return checkAttentionShapes(shapes, nbInputs);
}

class MaskedAttentionPlugin final : public IPluginV3,
                                    public IPluginV3OneCore,
                                    public IPluginV3OneBuild,
                                    public IPluginV3OneRuntime {
 public:
  explicit MaskedAttentionPlugin(float scale) : mScale(scale) {
    mField = PluginField("scale", &mScale, PluginFieldType::kFLOAT32, 1);
    mFieldCollection.nbFields = 1;
    mFieldCollection.fields = &mField;
  }

  MaskedAttentionPlugin(MaskedAttentionPlugin const& other) : MaskedAttentionPlugin(other.mScale) {
    mNbInputs = other.mNbInputs;
  }
  MaskedAttentionPlugin& operator=(MaskedAttentionPlugin const&) = delete;
  ~MaskedAttentionPlugin() override = default;

  // IPluginV3
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }

  IPluginV3* clone() noexcept override {
    return new (std::nothrow) MaskedAttentionPlugin(*this);
  }

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override {
    if (nbOutputs != 1 || out == nullptr) {
      logError("expects 3 or 4 inputs (q, k, v[, mask]) and 1 output");
      return -1;
    }
    TensorShape shapes[4];
    std::string const why = checkInputs(
        in, nbInputs, [](DynamicPluginTensorDesc const& t) { return t.desc.dims; }, shapes);
    if (!why.empty()) {
      logError(why);
      return -1;
    }
    mNbInputs = nbInputs;
    return 0;
  }

  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override {
    if (nbOutputs != 1 || nbInputs < 3) return -1;
    outputTypes[0] = inputTypes[0];
    return 0;
  }

  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                          IExprBuilder& exprBuilder) noexcept override {
    (void)shapeInputs;
    (void)nbShapeInputs;
    (void)exprBuilder;
    if (nbInputs < 3 || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
    outputs[0] = inputs[0];  // out has q's shape
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override {
    (void)nbOutputs;
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR) return false;
    if (nbInputs == 4 && pos == 3) return desc.type == DataType::kFLOAT;  // the mask
    if (pos == 0) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    return desc.type == inOut[0].desc.type;  // k, v and out follow q
  }

  size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override {
    (void)inputs;
    (void)nbInputs;
    (void)outputs;
    (void)nbOutputs;
    return 0;
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override {
    (void)out;
    if (nbOutputs != 1) return -1;
    TensorShape shapes[4];
    std::string const why =
        checkInputs(in, nbInputs, [](PluginTensorDesc const& t) { return t.dims; }, shapes);
    if (!why.empty()) {
      logError(why);
      return -1;
    }
    mNbInputs = nbInputs;
    return 0;
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override {
    (void)outputDesc;
    (void)workspace;
    // checked again (a few integer compares): a wrong size here reads out of bounds
    TensorShape shapes[4];
    std::string const why =
        checkInputs(inputDesc, mNbInputs, [](PluginTensorDesc const& t) { return t.dims; }, shapes);
    if (!why.empty()) {
      logError("enqueue: " + why);
      return -1;
    }
    EmosdkAttentionParams p =
        attentionParams(shapes, mNbInputs, mScale, inputDesc[0].type == DataType::kHALF);
    p.q = inputs[0];
    p.k = inputs[1];
    p.v = inputs[2];
    p.mask = mNbInputs == 4 ? static_cast<float const*>(inputs[3]) : nullptr;
    p.out = outputs[0];
    int const status = emosdk_attention_forward(&p, static_cast<void*>(stream));
    if (status != EMOSDK_OK) {
      logError(std::string("enqueue failed: ") + emosdk_attention_error_string(status));
      return -1;
    }
    return 0;
  }

  IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override {
    (void)context;
    return clone();
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    mField = PluginField("scale", &mScale, PluginFieldType::kFLOAT32, 1);
    return &mFieldCollection;
  }

 private:
  float mScale{0.f};
  int32_t mNbInputs{4};
  PluginField mField{};
  PluginFieldCollection mFieldCollection{};
};

class MaskedAttentionPluginCreator final : public IPluginCreatorV3One {
 public:
  MaskedAttentionPluginCreator() {
    mFields.emplace_back("scale", nullptr, PluginFieldType::kFLOAT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
  }

  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
  PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

  IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc,
                          TensorRTPhase phase) noexcept override {
    (void)name;
    (void)phase;
    float scale = 0.f;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
      PluginField const& f = fc->fields[i];
      if (f.name == nullptr || std::strcmp(f.name, "scale") != 0 || f.data == nullptr) continue;
      if (f.type == PluginFieldType::kFLOAT32) {
        scale = *static_cast<float const*>(f.data);
      } else if (f.type == PluginFieldType::kFLOAT64) {
        scale = static_cast<float>(*static_cast<double const*>(f.data));
      } else {
        logError("field 'scale' must be FLOAT32 or FLOAT64");
        return nullptr;
      }
    }
    if (!std::isfinite(scale) || scale < 0.f) {
      logError("field 'scale' must be finite and >= 0 (0 = 1/sqrt(head_dim))");
      return nullptr;
    }
    return new (std::nothrow) MaskedAttentionPlugin(scale);
  }

 private:
  std::vector<PluginField> mFields;
  PluginFieldCollection mFieldCollection{};
};

}  // namespace
}  // namespace emosdk

#define EMOSDK_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

EMOSDK_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  emosdk::gLogger.set(finder);
}

EMOSDK_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static emosdk::MaskedAttentionPluginCreator creator;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}
