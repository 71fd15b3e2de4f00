// Drives libamx_trt.so through TensorRT 10's plugin API without a TensorRT runtime.
//
//   harness LIB.so [--fake-nvinfer FAKE.so] [CHECK...]
//
// Loads the library as trtexec --dynamicPlugins does (getCreators + setLoggerFinder), then
// plays TensorRT's part: it builds the shape expressions, field collections and tensor
// descriptors TensorRT would pass. Every check prints one JSON line per case,
//   {"check": name, "case": label, "ok": bool, "detail": {...}}
// where ok is the harness's verdict and detail holds what the library did, so that
// tests/tensorrt/test_plugin_library.py can hold it to the contract. Each check runs in a
// forked child: a crash becomes an ok=false line instead of ending the run.
#include <NvInferRuntime.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

// ---- JSON: just enough to print strings, numbers, lists and objects ----------------------

std::string quote(std::string const& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

std::string num(int64_t v) { return std::to_string(v); }

std::string real(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

std::string boolean(bool v) { return v ? "true" : "false"; }

std::string list(std::vector<std::string> const& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
    return out + "]";
}

class Obj {
public:
    Obj& add(char const* key, std::string const& rawValue) {
        body_ += (body_.empty() ? "" : ", ") + quote(key) + ": " + rawValue;
        return *this;
    }
    std::string str() const { return "{" + body_ + "}"; }

private:
    std::string body_;
};

void emit(char const* check, std::string const& label, bool ok, Obj const& detail) {
    Obj line;
    line.add("check", quote(check)).add("case", quote(label)).add("ok", boolean(ok));
    line.add("detail", detail.str());
    std::printf("%s\n", line.str().c_str());
    std::fflush(stdout);
}

// ---- The logger TensorRT would hand over: it keeps every message --------------------------

class RecordingLogger : public ILogger {
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override {
        messages.push_back({severity, msg ? msg : "(null)"});
    }
    std::vector<std::pair<Severity, std::string>> messages;
};

class Finder : public ILoggerFinder {
public:
    ILogger* findLogger() override { return &logger; }
    RecordingLogger logger;
};

Finder gFinder;

// The kERROR messages logged since the last call, as a JSON list; they are consumed.
std::vector<std::string> takeErrors() {
    std::vector<std::string> errors;
    for (auto const& m : gFinder.logger.messages)
        if (m.first == ILogger::Severity::kERROR) errors.push_back(m.second);
    gFinder.logger.messages.clear();
    return errors;
}

std::string quoteAll(std::vector<std::string> const& strings) {
    std::vector<std::string> items;
    for (auto const& s : strings) items.push_back(quote(s));
    return list(items);
}

// True when one error is the library's own ("amx_trt: ...") and mentions `word`.
bool mentions(std::vector<std::string> const& errors, std::string const& word) {
    for (auto const& e : errors)
        if (e.rfind("amx_trt: ", 0) == 0 && e.find(word) != std::string::npos) return true;
    return false;
}

// ---- Shape expressions: TensorRT's IExprBuilder, with named symbols for unknown dims ------
// IDimensionExpr/IExprBuilder are thin wrappers that forward to an apiv:: implementation
// through mImpl, so one object can be both the wrapper and its implementation.

class Expr : public IDimensionExpr, public apiv::VDimensionExpr {
public:
    Expr(int64_t value, std::string symbol) : value_(value), symbol_(std::move(symbol)) { mImpl = this; }
    ~Expr() noexcept override = default;
    bool isConstant() const override { return symbol_.empty(); }
    int64_t getConstantValue() const override { return isConstant() ? value_ : INT64_MIN; }
    bool isSizeTensor() const override { return false; }
    std::string json() const { return isConstant() ? num(value_) : quote(symbol_); }
    std::string const& symbol() const { return symbol_; }

private:
    int64_t value_;
    std::string symbol_;
};

int64_t fold(DimensionOperation op, int64_t a, int64_t b) {
    switch (op) {
        case DimensionOperation::kSUM: return a + b;
        case DimensionOperation::kPROD: return a * b;
        case DimensionOperation::kMAX: return a > b ? a : b;
        case DimensionOperation::kMIN: return a < b ? a : b;
        case DimensionOperation::kSUB: return a - b;
        case DimensionOperation::kEQUAL: return a == b;
        case DimensionOperation::kLESS: return a < b;
        case DimensionOperation::kFLOOR_DIV: return b ? a / b - (a % b != 0 && (a < 0) != (b < 0)) : 0;
        case DimensionOperation::kCEIL_DIV: return b ? a / b + (a % b != 0 && (a < 0) == (b < 0)) : 0;
    }
    return 0;
}

class ExprBuilder : public IExprBuilder, public apiv::VExprBuilder {
public:
    ExprBuilder() { mImpl = this; }
    ~ExprBuilder() noexcept override = default;

    IDimensionExpr const* constant(int64_t value) override { return make(value, ""); }
    IDimensionExpr const* symbol(std::string const& name) { return make(0, name); }

    // Constants fold; anything involving a symbol stays symbolic, written out as text.
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a,
                                    IDimensionExpr const& b) override {
        if (a.isConstant() && b.isConstant())
            return constant(fold(op, a.getConstantValue(), b.getConstantValue()));
        static char const* const names[] = {"+", "*", "max", "min", "-", "==", "<", "//", "ceildiv"};
        return make(0, "(" + text(a) + " " + names[static_cast<int>(op)] + " " + text(b) + ")");
    }

    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
        sizeTensorDeclared = true;  // MatMul/Quantize have no size-tensor outputs
        return nullptr;
    }

    // A shape from dims written as text: numbers are constants, anything else a symbol.
    DimsExprs dims(std::vector<std::string> const& spec) {
        DimsExprs d{};
        d.nbDims = static_cast<int32_t>(spec.size());
        for (size_t i = 0; i < spec.size(); ++i) {
            char* end = nullptr;
            long long v = std::strtoll(spec[i].c_str(), &end, 10);
            d.d[i] = (*end == '\0' && !spec[i].empty()) ? constant(v) : symbol(spec[i]);
        }
        return d;
    }

    static std::string text(IDimensionExpr const& e) {
        auto const* mine = dynamic_cast<Expr const*>(&e);
        if (mine == nullptr) return "?";
        return mine->isConstant() ? std::to_string(e.getConstantValue()) : mine->symbol();
    }

    static std::string json(DimsExprs const& d) {
        std::vector<std::string> items;
        for (int32_t i = 0; i < d.nbDims && i < Dims::MAX_DIMS; ++i) {
            auto const* mine = d.d[i] ? dynamic_cast<Expr const*>(d.d[i]) : nullptr;
            items.push_back(mine ? mine->json() : quote(d.d[i] ? "foreign" : "null"));
        }
        return list(items);
    }

    bool sizeTensorDeclared = false;

private:
    IDimensionExpr const* make(int64_t value, std::string symbol) {
        pool_.push_back(std::make_unique<Expr>(value, std::move(symbol)));
        return pool_.back().get();
    }
    std::deque<std::unique_ptr<Expr>> pool_;
};

// ---- Plugin fields: a collection owning its data, as the ONNX parser builds one -----------

size_t elementSize(PluginFieldType type) {
    switch (type) {
        case PluginFieldType::kFLOAT16:
        case PluginFieldType::kINT16:
        case PluginFieldType::kBF16: return 2;
        case PluginFieldType::kFLOAT32:
        case PluginFieldType::kINT32: return 4;
        case PluginFieldType::kFLOAT64:
        case PluginFieldType::kINT64: return 8;
        case PluginFieldType::kDIMS: return sizeof(Dims);
        default: return 1;
    }
}

struct Field {
    std::string name;
    PluginFieldType type;
    int32_t length;
    std::vector<char> bytes;

    bool operator==(Field const& o) const {
        return name == o.name && type == o.type && length == o.length && bytes == o.bytes;
    }

    std::string json() const {
        Obj o;
        o.add("name", quote(name)).add("type", num(static_cast<int32_t>(type))).add("length", num(length));
        if (type == PluginFieldType::kCHAR) {
            o.add("value", quote(std::string(bytes.data(), strnlen(bytes.data(), bytes.size()))));
        } else if (type == PluginFieldType::kINT32 && bytes.size() >= 4) {
            int32_t v;
            std::memcpy(&v, bytes.data(), 4);
            o.add("value", num(v));
        } else if (type == PluginFieldType::kFLOAT32 && bytes.size() >= 4) {
            float v;
            std::memcpy(&v, bytes.data(), 4);
            o.add("value", real(v));
        }
        return o.str();
    }
};

class Fields {
public:
    Fields& text(char const* name, std::string const& value, bool withNul = true) {
        std::vector<char> bytes(value.begin(), value.end());
        bytes.push_back('\0');  // present either way; only `length` says whether it counts
        int32_t length = static_cast<int32_t>(value.size() + (withNul ? 1 : 0));
        return add({name, PluginFieldType::kCHAR, length, bytes});
    }
    Fields& i32(char const* name, int32_t v) { return scalar(name, PluginFieldType::kINT32, &v, 4); }
    Fields& f32(char const* name, float v) { return scalar(name, PluginFieldType::kFLOAT32, &v, 4); }
    Fields& f64(char const* name, double v) { return scalar(name, PluginFieldType::kFLOAT64, &v, 8); }

    Fields& add(Field field) {
        owned_.push_back(std::move(field));  // deque: earlier elements never move
        return *this;
    }

    PluginFieldCollection const* collection() {
        list_.clear();
        for (auto const& f : owned_)
            list_.emplace_back(f.name.c_str(), f.bytes.empty() ? nullptr : f.bytes.data(), f.type, f.length);
        fc_.nbFields = static_cast<int32_t>(list_.size());
        fc_.fields = list_.data();
        return &fc_;
    }

    // Overwrites every byte a plugin was shown: a plugin that kept pointers into the
    // collection instead of copying shows it when serialized again.
    void scribble() {
        for (auto& f : owned_) {
            // garbage, but a string stays NUL-terminated: the plugin reads wrong, not past
            bool text = f.type == PluginFieldType::kCHAR && !f.bytes.empty();
            std::fill(f.bytes.begin(), f.bytes.end() - (text ? 1 : 0), '\x5a');
            std::fill(f.name.begin(), f.name.end(), 'Z');
        }
    }

    // A deep copy of a collection a plugin returned, read at once (its pointers may not last).
    static Fields copyOf(PluginFieldCollection const* fc) {
        Fields out;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
            PluginField const& f = fc->fields[i];
            size_t size = f.data && f.length > 0 ? f.length * elementSize(f.type) : 0;
            auto const* p = static_cast<char const*>(f.data);
            out.add({f.name ? f.name : "(null)", f.type, f.length, std::vector<char>(p, p + size)});
        }
        return out;
    }

    std::deque<Field> const& all() const { return owned_; }

    std::string json() const {
        std::vector<std::string> items;
        for (auto const& f : owned_) items.push_back(f.json());
        return list(items);
    }

private:
    Fields& scalar(char const* name, PluginFieldType type, void const* v, size_t size) {
        auto const* p = static_cast<char const*>(v);
        return add({name, type, 1, std::vector<char>(p, p + size)});
    }
    std::deque<Field> owned_;
    std::vector<PluginField> list_;
    PluginFieldCollection fc_{};
};

// ---- The library under test --------------------------------------------------------------

struct FormatInfo {
    char const* name;
    int32_t block;           // B
    int32_t scalesPerBlock;  // S
};
constexpr FormatInfo kFormats[] = {
    {"amxfp4", 32, 2}, {"amxfp4-e4m3", 32, 2}, {"amxfp4-e8m0", 32, 2}, {"mxfp4", 32, 1}, {"nvfp4", 16, 1}};

struct MatMulDims {
    int64_t codes;   // Wcodes dim 1: nb*B/8 int32 words
    int64_t scales;  // Wscales length: ceil(N*nb*S/4) int32 words
};
MatMulDims matmulDims(FormatInfo const& f, int64_t k, int64_t n) {
    int64_t nb = (k + f.block - 1) / f.block;
    return {nb * f.block / 8, (n * nb * f.scalesPerBlock + 3) / 4};
}

constexpr char const* kDataTypes[] = {"kFLOAT", "kHALF",  "kINT8", "kINT32",
                                      "kBOOL",  "kUINT8", "kFP8",  "kBF16"};
std::string typeName(DataType t) {
    auto i = static_cast<size_t>(t);
    return i < sizeof kDataTypes / sizeof *kDataTypes ? kDataTypes[i] : "type" + std::to_string(i);
}
constexpr DataType kFloatTypes[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};

using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
using SetLoggerFinder = void (*)(ILoggerFinder*);

struct Library {
    void* handle = nullptr;
    std::vector<IPluginCreatorInterface*> creators;
    std::map<std::string, IPluginCreatorV3One*> byName;  // the V3One creators, by plugin name
};
Library gLib;
char const* gLibPath = nullptr;

bool isKind(IVersionedInterface const* i, char const* kind) {
    return i != nullptr && std::strcmp(i->getInterfaceInfo().kind, kind) == 0;
}

// The views TensorRT takes of a plugin; null where the plugin does not offer one.
struct Views {
    std::unique_ptr<IPluginV3> plugin;
    IPluginV3OneCore* core = nullptr;
    IPluginV3OneBuild* build = nullptr;
    IPluginV3OneRuntime* runtime = nullptr;
};

Views views(IPluginV3* plugin) {
    Views v;
    v.plugin.reset(plugin);
    if (plugin == nullptr) return v;
    auto* core = plugin->getCapabilityInterface(PluginCapabilityType::kCORE);
    auto* build = plugin->getCapabilityInterface(PluginCapabilityType::kBUILD);
    auto* runtime = plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME);
    if (isKind(core, "PLUGIN_V3ONE_CORE")) v.core = static_cast<IPluginV3OneCore*>(core);
    if (isKind(build, "PLUGIN_V3ONE_BUILD")) v.build = static_cast<IPluginV3OneBuild*>(build);
    if (isKind(runtime, "PLUGIN_V3ONE_RUNTIME")) v.runtime = static_cast<IPluginV3OneRuntime*>(runtime);
    return v;
}

Views create(char const* plugin, Fields& fields, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    auto it = gLib.byName.find(plugin);
    if (it == gLib.byName.end()) return {};
    return views(it->second->createPlugin("node_0", fields.collection(), phase));
}

Fields matmulFields(FormatInfo const& f, bool weightOnly, int32_t k) {
    Fields fields;
    fields.text("weight_format", f.name)
        .text("act_format", weightOnly ? "none" : f.name)
        .i32("in_features", k);
    if (std::strcmp(f.name, "nvfp4") == 0) fields.f32("weight_tensor_scale", 0.5f);
    return fields;
}

DynamicPluginTensorDesc desc(DataType type, std::vector<int64_t> const& dims) {
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    d.desc.scale = 1.0f;
    d.desc.dims.nbDims = d.min.nbDims = d.opt.nbDims = d.max.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) {
        bool known = dims[i] >= 0;  // -1: a runtime dimension, given a 1..64 profile
        d.desc.dims.d[i] = dims[i];
        d.min.d[i] = known ? dims[i] : 1;
        d.opt.d[i] = known ? dims[i] : 8;
        d.max.d[i] = known ? dims[i] : 64;
    }
    return d;
}

// Name, version and namespace through the core view, as TensorRT reads them.
Obj identity(Views const& v, bool& ok) {
    Obj o;
    if (v.core == nullptr) {
        ok = false;
        return o.add("core", "null");
    }
    o.add("name", quote(v.core->getPluginName())).add("version", quote(v.core->getPluginVersion()));
    return o.add("namespace", quote(v.core->getPluginNamespace()));
}

// ---- Checks ------------------------------------------------------------------------------

void checkCreators() {
    std::vector<std::string> items;
    bool ok = gLib.creators.size() == 2;
    for (auto* c : gLib.creators) {
        Obj o;
        o.add("kind", quote(c ? c->getInterfaceInfo().kind : "null"));
        if (!isKind(c, "PLUGIN CREATOR_V3ONE")) {
            ok = false;
            items.push_back(o.str());
            continue;
        }
        auto* v3 = static_cast<IPluginCreatorV3One*>(c);
        o.add("name", quote(v3->getPluginName())).add("version", quote(v3->getPluginVersion()));
        o.add("namespace", quote(v3->getPluginNamespace()));
        PluginFieldCollection const* fc = v3->getFieldNames();
        std::vector<std::string> fields;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
            fields.push_back(Obj()
                                 .add("name", quote(fc->fields[i].name))
                                 .add("type", num(static_cast<int32_t>(fc->fields[i].type)))
                                 .str());
        ok = ok && fc != nullptr;
        items.push_back(o.add("fields", list(fields)).str());
    }
    emit("creators", "", ok, Obj().add("count", num(gLib.creators.size())).add("creators", list(items)));
}

// One plugin's shapes for each of `inputs` (lists of shapes written as in ExprBuilder::dims).
std::string shapes(Views& v, std::vector<std::vector<std::vector<std::string>>> const& cases, bool& ok) {
    std::vector<std::string> items;
    for (auto const& inputs : cases) {
        ExprBuilder builder;
        std::vector<DimsExprs> in;
        std::vector<std::string> inJson;
        for (auto const& shape : inputs) {
            in.push_back(builder.dims(shape));
            inJson.push_back(ExprBuilder::json(in.back()));
        }
        DimsExprs out{};
        int32_t rc = v.build->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0, &out, 1,
                                              builder);
        ok = ok && rc == 0;
        items.push_back(Obj()
                            .add("inputs", list(inJson))
                            .add("rc", num(rc))
                            .add("output", ExprBuilder::json(out))
                            .add("errors", quoteAll(takeErrors()))
                            .str());
    }
    return list(items);
}

// One amx.MatMul: its views and identity, output type, shapes (symbolic, constant, rank 1,
// N symbolic), configuration with runtime dims, and workspace.
void matmulCase(FormatInfo const& f, bool weightOnly, DataType t, bool bias) {
    constexpr int32_t K = 100, N = 96;  // K not a multiple of any block: nb is a ceiling
    std::string label = std::string(f.name) + "/" + (weightOnly ? "none" : "same") + "/" + typeName(t) +
                        (bias ? "/bias" : "");
    Fields fields = matmulFields(f, weightOnly, K);
    Views v = create("MatMul", fields);
    bool ok = v.core && v.build && v.runtime;
    Obj d = identity(v, ok);
    if (!ok) {
        d.add("created", boolean(v.plugin != nullptr)).add("errors", quoteAll(takeErrors()));
        return emit("matmul", label, false, d);
    }
    auto dims = matmulDims(f, K, N);
    std::string k = num(K), n = num(N), c = num(dims.codes), s = num(dims.scales);
    auto withBias = [&](std::vector<std::vector<std::string>> in) {
        if (bias) in.push_back({in[1][0]});  // bias [N], N as Wcodes has it
        return in;
    };
    std::string shapeJson =
        shapes(v,
               {withBias({{"batch", "seq", k}, {n, c}, {s}}), withBias({{"2", "5", k}, {n, c}, {s}}),
                withBias({{k}, {n, c}, {s}}), withBias({{"rows", k}, {"N", c}, {s}})},
               ok);
    int32_t nbIn = bias ? 4 : 3;
    DataType inTypes[4] = {t, DataType::kINT32, DataType::kINT32, t};
    DataType outType = DataType::kBOOL;
    int32_t typesRc = v.build->getOutputDataTypes(&outType, 1, inTypes, nbIn);
    std::vector<DynamicPluginTensorDesc> in = {desc(t, {-1, -1, K}), desc(DataType::kINT32, {N, dims.codes}),
                                               desc(DataType::kINT32, {dims.scales}), desc(t, {N})};
    DynamicPluginTensorDesc out = desc(t, {-1, -1, N});
    int32_t configureRc = v.build->configurePlugin(in.data(), nbIn, &out, 1);
    size_t workspace = v.build->getWorkspaceSize(in.data(), nbIn, &out, 1);
    ok = ok && typesRc == 0 && configureRc == 0;
    d.add("nb_outputs", num(v.build->getNbOutputs())).add("types_rc", num(typesRc));
    d.add("output_type", quote(typeName(outType))).add("shapes", shapeJson);
    d.add("configure_rc", num(configureRc)).add("workspace", num(static_cast<int64_t>(workspace)));
    emit("matmul", label, ok, d.add("errors", quoteAll(takeErrors())));
}

void checkMatMul() {
    for (auto const& f : kFormats)
        for (bool weightOnly : {false, true})
            for (DataType t : kFloatTypes)
                for (bool bias : {false, true}) matmulCase(f, weightOnly, t, bias);
}

void checkQuantize() {
    for (auto const& f : kFormats)
        for (DataType t : kFloatTypes) {
            std::string label = std::string(f.name) + "/" + typeName(t);
            Fields fields;
            fields.text("format", f.name);
            Views v = create("Quantize", fields);
            bool ok = v.core && v.build && v.runtime;
            Obj d = identity(v, ok);
            if (!ok) {
                emit("quantize", label, false,
                     d.add("created", boolean(v.plugin != nullptr)).add("errors", quoteAll(takeErrors())));
                continue;
            }
            std::string shapeJson =
                shapes(v, {{{"batch", "heads", "seq", "64"}}, {{"3", "100"}}, {{"7"}}}, ok);
            DataType outType = DataType::kBOOL;
            int32_t typesRc = v.build->getOutputDataTypes(&outType, 1, &t, 1);
            DynamicPluginTensorDesc in = desc(t, {-1, 100}), out = desc(t, {-1, 100});
            int32_t configureRc = v.build->configurePlugin(&in, 1, &out, 1);
            ok = ok && typesRc == 0 && configureRc == 0;
            d.add("nb_outputs", num(v.build->getNbOutputs())).add("types_rc", num(typesRc));
            d.add("output_type", quote(typeName(outType)))
                .add("shapes", shapeJson)
                .add("configure_rc", num(configureRc));
            emit("quantize", label, ok, d.add("errors", quoteAll(takeErrors())));
        }
}

// TensorRT asks supportsFormatCombination position by position, with inOut[0..pos-1]
// already chosen; positions after pos hold leftovers, here a value nothing should accept.
void explore(IPluginV3OneBuild* build, std::vector<DynamicPluginTensorDesc>& io, int32_t nbIn, int32_t pos,
             std::vector<std::string>& prefix, std::vector<std::string>& accepted) {
    static constexpr DataType types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT32,
                                         DataType::kINT8,  DataType::kBOOL, DataType::kUINT8};
    if (pos == static_cast<int32_t>(io.size())) return;
    for (DataType t : types)
        for (TensorFormat fmt : {TensorFormat::kLINEAR, TensorFormat::kCHW32}) {
            io[pos].desc.type = t;
            io[pos].desc.format = fmt;
            if (!build->supportsFormatCombination(pos, io.data(), nbIn, 1)) continue;
            prefix.push_back(typeName(t) + (fmt == TensorFormat::kLINEAR ? ":kLINEAR" : ":kCHW32"));
            accepted.push_back(quoteAll(prefix));
            explore(build, io, nbIn, pos + 1, prefix, accepted);
            prefix.pop_back();
        }
    io[pos].desc.type = DataType::kBOOL;  // a leftover again for the positions before
    io[pos].desc.format = TensorFormat::kCHW32;
}

void checkFormats() {
    struct Case {
        char const* label;
        char const* plugin;
        int32_t format;
        bool weightOnly;
        int32_t nbIn;
    };
    constexpr Case cases[] = {{"MatMul/amxfp4/3", "MatMul", 0, false, 3},
                              {"MatMul/amxfp4/4", "MatMul", 0, false, 4},
                              {"MatMul/nvfp4-none/4", "MatMul", 4, true, 4},
                              {"Quantize/mxfp4/1", "Quantize", 3, false, 1}};
    for (auto const& c : cases) {
        FormatInfo const& f = kFormats[c.format];
        Fields fields = std::strcmp(c.plugin, "MatMul") == 0 ? matmulFields(f, c.weightOnly, 64)
                                                             : Fields().text("format", f.name);
        Views v = create(c.plugin, fields);
        if (v.build == nullptr) {
            emit("formats", c.label, false, Obj().add("errors", quoteAll(takeErrors())));
            continue;
        }
        auto dims = matmulDims(f, 64, 96);
        std::vector<DynamicPluginTensorDesc> io;
        if (c.nbIn == 1)
            io = {desc(DataType::kBOOL, {-1, 64}), desc(DataType::kBOOL, {-1, 64})};
        else
            io = {desc(DataType::kBOOL, {-1, 64}), desc(DataType::kBOOL, {96, dims.codes}),
                  desc(DataType::kBOOL, {dims.scales})};
        if (c.nbIn == 4) io.push_back(desc(DataType::kBOOL, {96}));
        if (c.nbIn != 1) io.push_back(desc(DataType::kBOOL, {-1, 96}));
        for (auto& d : io) d.desc.format = TensorFormat::kCHW32;
        std::vector<std::string> prefix, accepted;
        explore(v.build, io, c.nbIn, 0, prefix, accepted);
        emit("formats", c.label, true,
             Obj().add("accepted", list(accepted)).add("errors", quoteAll(takeErrors())));
    }
}

// A resource context whose allocator and recorder are absent: attachToContext must cope.
class NullContext : public IPluginResourceContext {
public:
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

void checkRoundTrip() {
    struct Case {
        std::string label;
        char const* plugin;
        Fields fields;
    };
    std::vector<Case> cases;
    for (auto const& f : kFormats) {
        for (bool weightOnly : {false, true})
            cases.push_back({std::string("MatMul/") + f.name + (weightOnly ? "/none" : "/same"), "MatMul",
                             matmulFields(f, weightOnly, 100)});
        cases.push_back({std::string("Quantize/") + f.name, "Quantize", Fields().text("format", f.name)});
    }
    for (auto& c : cases) {
        Obj d;
        Views built = create(c.plugin, c.fields);
        if (built.runtime == nullptr) {
            emit("roundtrip", c.label, false, d.add("errors", quoteAll(takeErrors())));
            continue;
        }
        Fields serialized = Fields::copyOf(built.runtime->getFieldsToSerialize());
        Views builtClone = views(built.plugin->clone());  // TensorRT clones build plugins freely
        bool cloneEqual =
            builtClone.runtime != nullptr &&
            Fields::copyOf(builtClone.runtime->getFieldsToSerialize()).all() == serialized.all();
        d.add("build_clone_equal", boolean(cloneEqual));
        built.plugin.reset();  // as in an engine file: the build plugin is gone by deserialization
        Fields engine = serialized;
        Views loaded = create(c.plugin, engine, TensorRTPhase::kRUNTIME);
        engine.scribble();
        bool ok = loaded.core != nullptr && loaded.runtime != nullptr;
        d.add("serialized", serialized.json()).add("runtime_created", boolean(ok));
        ok = ok && cloneEqual;
        auto same = [&](char const* key, IPluginV3* p) {
            Views other = views(p);
            bool equal = other.runtime != nullptr &&
                         Fields::copyOf(other.runtime->getFieldsToSerialize()).all() == serialized.all();
            d.add(key, boolean(equal));
            ok = ok && equal;
        };
        if (ok) {
            Fields runtimeFields = Fields::copyOf(loaded.runtime->getFieldsToSerialize());
            d.add("runtime_equal", boolean(runtimeFields.all() == serialized.all()));
            ok = ok && runtimeFields.all() == serialized.all();
            same("runtime_clone_equal", loaded.plugin->clone());
            NullContext context;
            same("attached_equal", loaded.runtime->attachToContext(&context));
            d.add("runtime_fields", runtimeFields.json());
        }
        emit("roundtrip", c.label, ok, d.add("errors", quoteAll(takeErrors())));
    }
}

// Field collections the parser could produce that must work, with what they serialize to.
void checkGoodFields() {
    struct Case {
        char const* label;
        char const* plugin;
        Fields fields;
    };
    std::vector<Case> cases;
    cases.push_back({"no_nul", "MatMul",
                     Fields()
                         .text("weight_format", "mxfp4", false)
                         .text("act_format", "none", false)
                         .i32("in_features", 64)});
    cases.push_back(
        {"reordered", "MatMul",
         Fields().i32("in_features", 64).text("act_format", "amxfp4").text("weight_format", "amxfp4")});
    cases.push_back({"nvfp4_scale", "MatMul",
                     Fields()
                         .text("weight_format", "nvfp4")
                         .text("act_format", "nvfp4")
                         .i32("in_features", 64)
                         .f32("weight_tensor_scale", 0.25f)});
    cases.push_back(
        {"default_scale", "MatMul",
         Fields().text("weight_format", "amxfp4-e8m0").text("act_format", "none").i32("in_features", 64)});
    cases.push_back({"quantize_no_nul", "Quantize", Fields().text("format", "nvfp4", false)});
    for (auto& c : cases) {
        Views v = create(c.plugin, c.fields);
        Obj d;
        if (v.runtime != nullptr)
            d.add("serialized", Fields::copyOf(v.runtime->getFieldsToSerialize()).json());
        emit("good_fields", c.label, v.runtime != nullptr, d.add("errors", quoteAll(takeErrors())));
    }
}

void checkBadFields() {
    struct Case {
        char const* label;
        char const* plugin;
        char const* field;
        Fields fields;
    };
    std::vector<Case> cases;
    auto base = [] { return Fields().text("act_format", "amxfp4").i32("in_features", 64); };
    cases.push_back({"missing_weight_format", "MatMul", "weight_format", base()});
    cases.push_back(
        {"unknown_weight_format", "MatMul", "weight_format", base().text("weight_format", "int3")});
    cases.push_back({"weight_format_as_int32", "MatMul", "weight_format", base().i32("weight_format", 1)});
    cases.push_back({"missing_act_format", "MatMul", "act_format",
                     Fields().text("weight_format", "amxfp4").i32("in_features", 64)});
    cases.push_back(
        {"unknown_act_format", "MatMul", "act_format",
         Fields().text("weight_format", "amxfp4").text("act_format", "int3").i32("in_features", 64)});
    cases.push_back({"missing_in_features", "MatMul", "in_features",
                     Fields().text("weight_format", "amxfp4").text("act_format", "none")});
    cases.push_back(
        {"in_features_as_float32", "MatMul", "in_features",
         Fields().text("weight_format", "amxfp4").text("act_format", "none").f32("in_features", 64.0f)});
    cases.push_back(
        {"in_features_zero", "MatMul", "in_features",
         Fields().text("weight_format", "amxfp4").text("act_format", "none").i32("in_features", 0)});
    cases.push_back(
        {"in_features_negative", "MatMul", "in_features",
         Fields().text("weight_format", "amxfp4").text("act_format", "none").i32("in_features", -64)});
    cases.push_back(
        {"nvfp4_without_scale", "MatMul", "weight_tensor_scale",
         Fields().text("weight_format", "nvfp4").text("act_format", "none").i32("in_features", 64)});
    cases.push_back({"scale_as_float64", "MatMul", "weight_tensor_scale",
                     Fields()
                         .text("weight_format", "nvfp4")
                         .text("act_format", "none")
                         .i32("in_features", 64)
                         .f64("weight_tensor_scale", 0.5)});
    cases.push_back({"quantize_missing_format", "Quantize", "format", Fields()});
    cases.push_back({"quantize_unknown_format", "Quantize", "format", Fields().text("format", "int3")});
    for (auto& c : cases) {
        Views v = create(c.plugin, c.fields);
        std::vector<std::string> errors = takeErrors();
        bool logged = mentions(errors, c.field);
        Obj d;
        d.add("field", quote(c.field))
            .add("created", boolean(v.plugin != nullptr))
            .add("logged", boolean(logged));
        emit("bad_fields", c.label, v.plugin == nullptr && logged, d.add("errors", quoteAll(errors)));
    }
}

// Inconsistent inputs must be refused (non-zero) with a logged reason; unknown dims must not.
void checkShapeErrors() {
    FormatInfo const& f = kFormats[0];  // amxfp4, K = 64: Wcodes [N, 8], Wscales [ceil(N*2*2/4)]
    auto dims = matmulDims(f, 64, 96);
    std::string c = num(dims.codes), s = num(dims.scales);
    struct ShapeCase {
        char const* label;
        std::vector<std::vector<std::string>> inputs;
        bool fails;
    };
    std::vector<ShapeCase> shapeCases = {
        {"x_last_dim", {{"batch", "100"}, {"96", c}, {s}}, true},
        {"wcodes_dim1", {{"batch", "64"}, {"96", num(dims.codes + 1)}, {s}}, true},
        {"two_inputs", {{"batch", "64"}, {"96", c}}, true},
        {"five_inputs", {{"batch", "64"}, {"96", c}, {s}, {"96"}, {"96"}}, true},
        {"symbolic_k", {{"batch", "k"}, {"n", "c"}, {"s"}}, false},
    };
    for (auto const& sc : shapeCases) {
        Fields fields = matmulFields(f, false, 64);
        Views v = create("MatMul", fields);
        if (v.build == nullptr) {
            emit("shape_errors", sc.label, false, Obj().add("errors", quoteAll(takeErrors())));
            continue;
        }
        bool allOk = true;
        std::string json = shapes(v, {sc.inputs}, allOk);
        bool ok = sc.fails ? (!allOk && json.find("amx_trt: ") != std::string::npos) : allOk;
        emit("shape_errors", sc.label, ok, Obj().add("expect_error", boolean(sc.fails)).add("shapes", json));
    }
    struct ConfigCase {
        char const* label;
        std::vector<int64_t> x, codes, scales;
        bool fails;
    };
    std::vector<ConfigCase> configCases = {
        {"configure_wscales", {-1, 64}, {96, dims.codes}, {dims.scales + 1}, true},
        {"configure_x_last_dim", {-1, 100}, {96, dims.codes}, {dims.scales}, true},
        {"configure_wcodes_dim1", {-1, 64}, {96, dims.codes - 1}, {dims.scales}, true},
        {"configure_unknown_dims", {-1, -1}, {-1, -1}, {-1}, false},
        {"configure_valid", {4, 64}, {96, dims.codes}, {dims.scales}, false},
    };
    for (auto const& cc : configCases) {
        Fields fields = matmulFields(f, false, 64);
        Views v = create("MatMul", fields);
        if (v.build == nullptr) {
            emit("shape_errors", cc.label, false, Obj().add("errors", quoteAll(takeErrors())));
            continue;
        }
        std::vector<DynamicPluginTensorDesc> in = {
            desc(DataType::kHALF, cc.x), desc(DataType::kINT32, cc.codes), desc(DataType::kINT32, cc.scales)};
        DynamicPluginTensorDesc out = desc(DataType::kHALF, {cc.x[0], 96});
        int32_t rc = v.build->configurePlugin(in.data(), 3, &out, 1);
        std::vector<std::string> errors = takeErrors();
        bool ok = cc.fails ? (rc != 0 && mentions(errors, "")) : rc == 0;
        emit("shape_errors", cc.label, ok,
             Obj().add("expect_error", boolean(cc.fails)).add("rc", num(rc)).add("errors", quoteAll(errors)));
    }
}

// Loaded without libnvinfer in the process, the library has no registry to register into:
// it must load quietly (the test also checks stderr) and serve its creators all the same.
void checkNoNvinfer() {
    void* nvinfer = dlopen("libnvinfer.so.10", RTLD_LAZY | RTLD_NOLOAD);
    bool ok = nvinfer == nullptr && gLib.handle != nullptr && !gLib.creators.empty();
    emit("no_nvinfer", "", ok,
         Obj().add("nvinfer_loaded", boolean(nvinfer != nullptr)).add("creators", num(gLib.creators.size())));
}

// Needs --fake-nvinfer: fake_nvinfer.so was loaded before the library, under the soname
// libnvinfer.so.10, so the library's constructor found its getPluginRegistry().
void checkSelfRegistration(void* fake) {
    using Registered = int32_t (*)(int32_t, char const**, char const**, char const**, void const**, int32_t*);
    auto query = fake ? reinterpret_cast<Registered>(dlsym(fake, "fake_registered")) : nullptr;
    if (query == nullptr) {
        emit("self_registration", "", false, Obj().add("reason", quote("run with --fake-nvinfer FAKE.so")));
        return;
    }
    std::vector<std::string> items;
    int32_t count = query(-1, nullptr, nullptr, nullptr, nullptr, nullptr);
    bool ok = count == 2;
    for (int32_t i = 0; i < count; ++i) {
        char const *name, *version, *ns;
        void const* creator;
        int32_t v3;
        query(i, &name, &version, &ns, &creator, &v3);
        bool known = false;
        for (auto* c : gLib.creators) known = known || c == creator;
        ok = ok && known && v3 && std::strcmp(ns, "amx") == 0;
        items.push_back(Obj()
                            .add("name", quote(name))
                            .add("version", quote(version))
                            .add("namespace", quote(ns))
                            .add("same_as_getCreators", boolean(known))
                            .add("v3_overload", boolean(v3))
                            .str());
    }
    // Informational: whether unloading the library takes its creators back out of the registry.
    // (only meaningful if dlclose really unmapped it, hence unloaded_by_dlclose)
    dlclose(gLib.handle);
    void* still = dlopen(gLibPath, RTLD_NOW | RTLD_NOLOAD);
    auto deregistered = reinterpret_cast<int32_t (*)()>(dlsym(fake, "fake_deregistered"));
    Obj d;
    d.add("registered", list(items)).add("unloaded_by_dlclose", boolean(still == nullptr));
    d.add("deregistered_after_dlclose", num(deregistered ? deregistered() : -1));
    emit("self_registration", "", ok, d);
}

bool load(char const* path) {
    gLibPath = path;
    gLib.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (gLib.handle == nullptr) {
        emit("load", "", false, Obj().add("error", quote(dlerror())));
        return false;
    }
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(gLib.handle, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(gLib.handle, "getCreators"));
    if (setLoggerFinder == nullptr || getCreators == nullptr) {
        Obj d;
        d.add("setLoggerFinder", boolean(setLoggerFinder)).add("getCreators", boolean(getCreators));
        emit("load", "", false, d);
        return false;
    }
    setLoggerFinder(&gFinder);
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; creators != nullptr && i < n; ++i) {
        gLib.creators.push_back(creators[i]);
        if (isKind(creators[i], "PLUGIN CREATOR_V3ONE")) {
            auto* v3 = static_cast<IPluginCreatorV3One*>(creators[i]);
            gLib.byName[v3->getPluginName()] = v3;
        }
    }
    return true;
}

// Runs one check in a child process, so that a crash is reported and the others still run.
void isolated(char const* name, std::function<void()> const& check) {
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        check();
        std::fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        emit(name, "", false, Obj().add("crashed", quote(strsignal(WTERMSIG(status)))));
    else if (WEXITSTATUS(status) != 0)
        emit(name, "", false, Obj().add("exit_status", num(WEXITSTATUS(status))));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s LIB.so [--fake-nvinfer FAKE.so] [CHECK...]\n", argv[0]);
        return 2;
    }
    void* fake = nullptr;
    std::vector<std::string> names;
    for (int i = 2; i < argc; ++i) {
        if (std::strcmp(argv[i], "--fake-nvinfer") == 0 && i + 1 < argc) {
            // GLOBAL and first: the library must find it by soname when its constructor runs
            fake = dlopen(argv[++i], RTLD_NOW | RTLD_GLOBAL);
            if (fake == nullptr) std::fprintf(stderr, "harness: %s\n", dlerror());
        } else {
            names.push_back(argv[i]);
        }
    }
    if (!load(argv[1])) return 1;
    std::map<std::string, std::function<void()>> checks = {
        {"creators", checkCreators},    {"matmul", checkMatMul},
        {"quantize", checkQuantize},    {"formats", checkFormats},
        {"roundtrip", checkRoundTrip},  {"good_fields", checkGoodFields},
        {"bad_fields", checkBadFields}, {"shape_errors", checkShapeErrors},
        {"no_nvinfer", checkNoNvinfer}, {"self_registration", [fake] { checkSelfRegistration(fake); }},
    };
    if (names.empty())
        for (auto const& entry : checks)
            if (entry.first != "self_registration") names.push_back(entry.first);
    for (auto const& name : names) {
        auto it = checks.find(name);
        if (it == checks.end()) {
            std::fprintf(stderr, "harness: unknown check %s\n", name.c_str());
            return 2;
        }
        isolated(name.c_str(), it->second);
    }
    return 0;
}
