// Strict pickle VM + libzip reader for torch.save checkpoints. The VM keeps every
// object in one pool and refers to them by index: no ownership graph, so a hostile
// pickle can build cycles or deep nesting without leaking or overflowing the C++ stack
// on destruction, and memory stays proportional to the input (one object per opcode).
#include "weights/torch_pth.h"

#include <zip.h>

#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <unordered_map>

namespace vit {
namespace {

enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };

struct Obj {
  Kind kind = Kind::None;
  int64_t i = 0;                // Int, Bool
  double f = 0;                 // Float
  std::string s;                // Str; Global: "module.name"
  std::vector<uint32_t> items;  // Tuple, List; Dict: key, value, key, value, ...
  PthTensorRef t;               // Storage (dtype, storage_key, storage_numel), Tensor
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::Str:
      return "str";
    case Kind::Tuple:
      return "tuple";
    case Kind::List:
      return "list";
    case Kind::Dict:
      return "dict";
    case Kind::Global:
      return "global";
    case Kind::Storage:
      return "storage";
    case Kind::Tensor:
      return "tensor";
  }
  return "?";
}

// Names of pickle opcodes, so that a refusal says what the file tried to do.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(':
      return "MARK";
    case '.':
      return "STOP";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'F':
      return "FLOAT";
    case 'I':
      return "INT";
    case 'J':
      return "BININT";
    case 'K':
      return "BININT1";
    case 'L':
      return "LONG";
    case 'M':
      return "BININT2";
    case 'N':
      return "NONE";
    case 'P':
      return "PERSID";
    case 'Q':
      return "BINPERSID";
    case 'R':
      return "REDUCE";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'X':
      return "BINUNICODE";
    case 'a':
      return "APPEND";
    case 'b':
      return "BUILD";
    case 'c':
      return "GLOBAL";
    case 'd':
      return "DICT";
    case '}':
      return "EMPTY_DICT";
    case 'e':
      return "APPENDS";
    case 'g':
      return "GET";
    case 'h':
      return "BINGET";
    case 'i':
      return "INST";
    case 'j':
      return "LONG_BINGET";
    case 'l':
      return "LIST";
    case ']':
      return "EMPTY_LIST";
    case 'o':
      return "OBJ";
    case 'p':
      return "PUT";
    case 'q':
      return "BINPUT";
    case 'r':
      return "LONG_BINPUT";
    case 's':
      return "SETITEM";
    case 't':
      return "TUPLE";
    case ')':
      return "EMPTY_TUPLE";
    case 'u':
      return "SETITEMS";
    case 'G':
      return "BINFLOAT";
    case 0x80:
      return "PROTO";
    case 0x81:
      return "NEWOBJ";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case 0x85:
      return "TUPLE1";
    case 0x86:
      return "TUPLE2";
    case 0x87:
      return "TUPLE3";
    case 0x88:
      return "NEWTRUE";
    case 0x89:
      return "NEWFALSE";
    case 0x8a:
      return "LONG1";
    case 0x8b:
      return "LONG4";
    case 0x8c:
      return "SHORT_BINUNICODE";
    case 0x8d:
      return "BINUNICODE8";
    case 0x8e:
      return "BINBYTES8";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x93:
      return "STACK_GLOBAL";
    case 0x94:
      return "MEMOIZE";
    case 0x95:
      return "FRAME";
    case 0x96:
      return "BYTEARRAY8";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
  }
  return nullptr;
}

// Storage classes torch.save names; the element size is what the data entry must hold.
struct StorageType {
  const char* global;
  const char* dtype;
  int elsize;
};
const StorageType kStorages[] = {{"torch.FloatStorage", "float32", 4},     {"torch.HalfStorage", "float16", 2},
                                 {"torch.BFloat16Storage", "bfloat16", 2}, {"torch.DoubleStorage", "float64", 8},
                                 {"torch.LongStorage", "int64", 8},        {"torch.IntStorage", "int32", 4},
                                 {"torch.ShortStorage", "int16", 2},       {"torch.CharStorage", "int8", 1},
                                 {"torch.ByteStorage", "uint8", 1},        {"torch.BoolStorage", "bool", 1}};

const StorageType* storage_type(const std::string& global) {
  for (auto& s : kStorages)
    if (global == s.global) return &s;
  return nullptr;
}

int dtype_elsize(const std::string& dtype) {
  for (auto& s : kStorages)
    if (dtype == s.dtype) return s.elsize;
  return 0;
}

class PickleVM {
 public:
  PickleVM(const uint8_t* p, size_t n, std::string what) : p_(p), n_(n), what_(std::move(what)) {}

  std::vector<PthTensorRef> run() {
    bool stopped = false;
    while (!stopped) {
      if (pos_ >= n_) fail("pickle ends without STOP (truncated?)");
      op_pos_ = pos_;
      uint8_t op = p_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          uint8_t v = u8();
          if (v < 2 || v > 5) fail("unsupported pickle protocol " + std::to_string(v));
          break;
        }
        case 0x95:
          take(8);
          break;  // FRAME: a length hint only
        case '}':
          push(make(Kind::Dict));
          break;
        case ')':
          push(make(Kind::Tuple));
          break;
        case ']':
          push(make(Kind::List));
          break;
        case 'N':
          push(make(Kind::None));
          break;
        case 0x88:
        case 0x89: {
          uint32_t o = make(Kind::Bool);
          pool_[o].i = op == 0x88;
          push(o);
          break;
        }
        case '(':
          marks_.push_back(stack_.size());
          break;
        case 'X':
          push_str(le(4));
          break;  // BINUNICODE
        case 0x8c:
          push_str(u8());
          break;  // SHORT_BINUNICODE
        case 'J':
          push_int(int32_t(uint32_t(le(4))));
          break;  // BININT: signed
        case 'K':
          push_int(u8());
          break;
        case 'M':
          push_int(int64_t(le(2)));
          break;
        case 0x8a: {  // LONG1: n-byte little-endian two's complement
          uint8_t nb = u8();
          if (nb > 8) fail("LONG1 of " + std::to_string(nb) + " bytes does not fit in 64 bits");
          const uint8_t* b = take(nb);
          uint64_t v = 0;
          for (int k = 0; k < nb; ++k) v |= uint64_t(b[k]) << (8 * k);
          if (nb > 0 && nb < 8 && (b[nb - 1] & 0x80)) v |= ~uint64_t(0) << (8 * nb);  // sign-extend
          push_int(int64_t(v));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const uint8_t* b = take(8);
          uint64_t v = 0;
          for (int k = 0; k < 8; ++k) v = (v << 8) | b[k];
          uint32_t o = make(Kind::Float);
          std::memcpy(&pool_[o].f, &v, 8);
          push(o);
          break;
        }
        case 't': {
          size_t m = pop_mark();
          uint32_t o = make(Kind::Tuple);
          pool_[o].items.assign(stack_.begin() + m, stack_.end());
          stack_.resize(m);
          push(o);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          size_t k = op - 0x84;
          if (stack_size_above_mark() < k) fail("stack underflow");
          uint32_t o = make(Kind::Tuple);
          pool_[o].items.assign(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(o);
          break;
        }
        case 'q':
          memo_put(u8());
          break;
        case 'r':
          memo_put(uint32_t(le(4)));
          break;
        case 0x94:
          memo_put(uint32_t(memo_.size()));
          break;  // MEMOIZE
        case 'h':
          memo_get(u8());
          break;
        case 'j':
          memo_get(uint32_t(le(4)));
          break;
        case 's': {
          uint32_t v = pop(), k = pop();
          dict_set(top(), k, v);
          break;
        }
        case 'u': {
          size_t m = pop_mark();
          if ((stack_.size() - m) % 2) fail("SETITEMS with an odd number of items");
          if (m == 0) fail("stack underflow");
          uint32_t d = stack_[m - 1];
          for (size_t k = m; k < stack_.size(); k += 2) dict_set(d, stack_[k], stack_[k + 1]);
          stack_.resize(m);
          break;
        }
        case 'a': {
          uint32_t v = pop();
          list_of(top()).items.push_back(v);
          break;
        }
        case 'e': {
          size_t m = pop_mark();
          if (m == 0) fail("stack underflow");
          Obj& l = list_of(stack_[m - 1]);
          l.items.insert(l.items.end(), stack_.begin() + m, stack_.end());
          stack_.resize(m);
          break;
        }
        case 'c':
          global();
          break;
        case 'Q':
          persistent_load();
          break;
        case 'R':
          reduce();
          break;
        case 'b': {  // BUILD: only OrderedDict's attribute state (torch's _metadata) -- ignored
          uint32_t state = pop();
          Kind sk = pool_[state].kind;
          if (pool_[top()].kind != Kind::Dict || (sk != Kind::Dict && sk != Kind::None))
            fail(std::string("BUILD on a ") + kind_name(pool_[top()].kind) + " is not allowed");
          break;
        }
        case '.':
          stopped = true;
          break;
        default: {
          const char* name = opcode_name(op);
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + (name ? name : "(unknown)") + " (" + hex +
               "); only the opcodes torch.save uses for state dicts are accepted");
        }
      }
    }
    if (!marks_.empty()) fail("STOP with an open MARK");
    if (stack_.size() != 1) fail("STOP with " + std::to_string(stack_.size()) + " objects on the stack, expected 1");
    return extract(stack_[0]);
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error(what_ + ": data.pkl offset " + std::to_string(op_pos_) + ": " + msg);
  }
  const uint8_t* take(size_t k) {
    if (k > n_ - pos_)
      fail("pickle truncated: needs " + std::to_string(k) + " more bytes, " + std::to_string(n_ - pos_) + " left");
    const uint8_t* b = p_ + pos_;
    pos_ += k;
    return b;
  }
  uint8_t u8() { return *take(1); }
  uint64_t le(int k) {
    const uint8_t* b = take(size_t(k));
    uint64_t v = 0;
    for (int i = 0; i < k; ++i) v |= uint64_t(b[i]) << (8 * i);
    return v;
  }
  uint32_t make(Kind k) {
    pool_.emplace_back();
    pool_.back().kind = k;
    return uint32_t(pool_.size() - 1);
  }
  void push(uint32_t o) { stack_.push_back(o); }
  size_t stack_size_above_mark() const { return stack_.size() - (marks_.empty() ? 0 : marks_.back()); }
  uint32_t pop() {
    if (stack_size_above_mark() == 0) fail("stack underflow");
    uint32_t o = stack_.back();
    stack_.pop_back();
    return o;
  }
  uint32_t top() {
    if (stack_size_above_mark() == 0) fail("stack underflow");
    return stack_.back();
  }
  size_t pop_mark() {
    if (marks_.empty()) fail("no MARK to close");
    size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }
  void push_int(int64_t v) {
    uint32_t o = make(Kind::Int);
    pool_[o].i = v;
    push(o);
  }
  void push_str(uint64_t len) {
    const uint8_t* b = take(len);  // checks the length against what is left first
    uint32_t o = make(Kind::Str);
    pool_[o].s.assign(reinterpret_cast<const char*>(b), len);
    push(o);
  }
  void memo_put(uint32_t idx) { memo_[idx] = top(); }
  void memo_get(uint32_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo index " + std::to_string(idx) + " was never stored");
    push(it->second);
  }
  Obj& list_of(uint32_t o) {
    if (pool_[o].kind != Kind::List) fail(std::string("APPEND to a ") + kind_name(pool_[o].kind));
    return pool_[o];
  }
  void dict_set(uint32_t d, uint32_t k, uint32_t v) {
    if (pool_[d].kind != Kind::Dict) fail(std::string("SETITEM on a ") + kind_name(pool_[d].kind));
    if (pool_[k].kind != Kind::Str) fail(std::string("dict key is a ") + kind_name(pool_[k].kind) + ", expected str");
    // Linear scan for a duplicate: state dicts have a few hundred keys, and refusing a
    // repeated key is safer than silently keeping one of the two.
    auto& it = pool_[d].items;
    for (size_t j = 0; j < it.size(); j += 2)
      if (pool_[it[j]].s == pool_[k].s) fail("duplicate dict key '" + pool_[k].s + "'");
    it.push_back(k);
    it.push_back(v);
  }
  std::string line() {
    size_t start = pos_;
    while (pos_ < n_ && p_[pos_] != '\n') {
      if (pos_ - start > 256) fail("GLOBAL name longer than 256 bytes");
      ++pos_;
    }
    if (pos_ >= n_) fail("pickle truncated inside a GLOBAL name");
    return std::string(reinterpret_cast<const char*>(p_ + start), pos_++ - start);
  }
  void global() {
    std::string module = line(), name = line();
    std::string full = module + "." + name;
    if (full != "torch._utils._rebuild_tensor_v2" && full != "collections.OrderedDict" && !storage_type(full))
      fail("GLOBAL '" + full +
           "' is not allowed: only torch._utils._rebuild_tensor_v2, "
           "collections.OrderedDict and torch.*Storage may appear in a state dict; nothing is executed (as "
           "torch.load(weights_only=True) refuses it). A training checkpoint that pickles other objects beside "
           "the weights (timm's train.py saves its argparse.Namespace 'args') can be cut to its state dict, in "
           "PyTorch, for a file you trust: torch.save(torch.load(F, weights_only=False)['state_dict'], "
           "'weights.pth')");
    uint32_t o = make(Kind::Global);
    pool_[o].s = full;
    push(o);
  }
  void persistent_load() {
    // torch.save's persistent id: ('storage', <StorageType>, key, location, numel)
    uint32_t pid = pop();
    const Obj& t = pool_[pid];
    if (t.kind != Kind::Tuple || t.items.size() != 5)
      fail("persistent id is not a 5-tuple ('storage', type, key, location, numel)");
    const Obj &tag = pool_[t.items[0]], &ty = pool_[t.items[1]], &key = pool_[t.items[2]], &numel = pool_[t.items[4]];
    if (tag.kind != Kind::Str || tag.s != "storage") fail("persistent id does not start with 'storage'");
    if (ty.kind != Kind::Global || !storage_type(ty.s)) fail("persistent id names no torch storage type");
    if (key.kind != Kind::Str) fail("persistent id storage key is not a str");
    if (numel.kind != Kind::Int || numel.i < 0) fail("persistent id storage size is not a non-negative int");
    PthTensorRef st;  // copied out first: make() may grow the pool and move `t`'s items
    st.storage_key = key.s;
    st.dtype = storage_type(ty.s)->dtype;
    st.storage_numel = numel.i;
    uint32_t o = make(Kind::Storage);
    pool_[o].t = std::move(st);
    push(o);
  }
  std::vector<int64_t> int_tuple(uint32_t o, const char* what) {
    const Obj& t = pool_[o];
    if (t.kind != Kind::Tuple) fail(std::string("tensor ") + what + " is not a tuple");
    if (t.items.size() > 8) fail(std::string("tensor ") + what + " has more than 8 dimensions");
    std::vector<int64_t> v;
    for (uint32_t x : t.items) {
      if (pool_[x].kind != Kind::Int) fail(std::string("tensor ") + what + " holds a " + kind_name(pool_[x].kind));
      v.push_back(pool_[x].i);
    }
    return v;
  }
  void reduce() {
    uint32_t args = pop(), fn = pop();
    if (pool_[fn].kind != Kind::Global)
      fail(std::string("REDUCE on a ") + kind_name(pool_[fn].kind) + ", not a whitelisted callable");
    if (pool_[args].kind != Kind::Tuple) fail("REDUCE arguments are not a tuple");
    const std::string callee = pool_[fn].s;  // a copy: make() below may move the pool
    std::vector<uint32_t> a = pool_[args].items;
    if (callee == "collections.OrderedDict") {
      if (!a.empty()) fail("collections.OrderedDict called with arguments");
      push(make(Kind::Dict));
    } else if (callee == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() != 6 && a.size() != 7)
        fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
      if (pool_[a[0]].kind != Kind::Storage) fail("_rebuild_tensor_v2: first argument is not a storage");
      if (pool_[a[1]].kind != Kind::Int) fail("_rebuild_tensor_v2: storage offset is not an int");
      PthTensorRef t = pool_[a[0]].t;
      t.offset = pool_[a[1]].i;
      t.shape = int_tuple(a[2], "size");
      t.stride = int_tuple(a[3], "stride");
      if (t.shape.size() != t.stride.size()) fail("_rebuild_tensor_v2: size and stride differ in length");
      uint32_t o = make(Kind::Tensor);
      pool_[o].t = std::move(t);
      push(o);
    } else {
      fail("REDUCE on '" + callee + "' is not allowed");
    }
  }
  bool is_tensor_dict(uint32_t d) const {
    const auto& it = pool_[d].items;
    if (pool_[d].kind != Kind::Dict || it.empty()) return false;
    for (size_t j = 1; j < it.size(); j += 2)
      if (pool_[it[j]].kind != Kind::Tensor) return false;
    return true;
  }
  std::vector<PthTensorRef> extract(uint32_t root) {
    op_pos_ = n_;
    if (pool_[root].kind != Kind::Dict)
      fail(std::string("top-level object is a ") + kind_name(pool_[root].kind) + ", expected a dict");
    uint32_t sd = root;
    if (!is_tensor_dict(root)) {
      const auto& it = pool_[root].items;
      sd = UINT32_MAX;
      for (size_t j = 0; j < it.size(); j += 2)
        if ((pool_[it[j]].s == "model" || pool_[it[j]].s == "state_dict") && pool_[it[j + 1]].kind == Kind::Dict)
          sd = it[j + 1];
      if (sd == UINT32_MAX) {
        std::string keys;
        for (size_t j = 0; j < it.size() && j < 20; j += 2) keys += (j ? ", " : "") + pool_[it[j]].s;
        fail(
            "top-level dict is not a state dict (a value is not a tensor) and has no 'model' or 'state_dict' entry; "
            "keys: " +
            keys);
      }
    }
    std::vector<PthTensorRef> out;
    const auto& it = pool_[sd].items;
    for (size_t j = 0; j < it.size(); j += 2) {
      if (pool_[it[j + 1]].kind != Kind::Tensor)
        fail("state dict entry '" + pool_[it[j]].s + "' is a " + kind_name(pool_[it[j + 1]].kind) + ", not a tensor");
      out.push_back(pool_[it[j + 1]].t);
      out.back().key = pool_[it[j]].s;
    }
    if (out.empty()) fail("state dict holds no tensors");
    return out;
  }

  const uint8_t* p_;
  size_t n_, pos_ = 0, op_pos_ = 0;
  std::string what_;
  std::vector<Obj> pool_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
};

// RAII for libzip handles.
struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

std::vector<uint8_t> read_entry(zip_t* z, const std::string& name, const std::string& what, uint64_t archive_size) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat(z, name.c_str(), 0, &st) != 0) throw std::runtime_error(what + ": archive has no entry '" + name + "'");
  // Deflate cannot expand more than ~1032x; a larger claim is a forged header, and
  // trusting it would let a tiny file request a huge allocation.
  if (!(st.valid & ZIP_STAT_SIZE) || st.size > archive_size * 1032 + 1024)
    throw std::runtime_error(what + ": entry '" + name + "' claims an implausible size");
  std::unique_ptr<zip_file_t, ZipFileCloser> f(zip_fopen(z, name.c_str(), 0));
  if (!f) throw std::runtime_error(what + ": cannot open entry '" + name + "': " + zip_strerror(z));
  std::vector<uint8_t> buf(st.size);
  zip_uint64_t got = 0;
  while (got < st.size) {
    zip_int64_t r = zip_fread(f.get(), buf.data() + got, st.size - got);
    if (r < 0) throw std::runtime_error(what + ": entry '" + name + "' is corrupt: " + zip_file_strerror(f.get()));
    if (r == 0) break;
    got += zip_uint64_t(r);
  }
  if (got != st.size) throw std::runtime_error(what + ": entry '" + name + "' is truncated");
  // Reading past the end makes libzip verify the entry's CRC-32.
  uint8_t extra;
  if (zip_fread(f.get(), &extra, 1) != 0)
    throw std::runtime_error(what + ": entry '" + name +
                             "' is corrupt (CRC mismatch or extra data): " + zip_file_strerror(f.get()));
  return buf;
}

StateDict read_zip(zip_t* z, const std::string& what, uint64_t archive_size) {
  // torch.save puts every record under one folder, named after the file when saved.
  std::string prefix;
  zip_int64_t ne = zip_get_num_entries(z, 0);
  for (zip_int64_t k = 0; k < ne; ++k) {
    const char* nm = zip_get_name(z, zip_uint64_t(k), 0);
    if (!nm) continue;
    std::string s = nm;
    size_t slash = s.find('/');
    if (slash != std::string::npos && s.substr(slash) == "/data.pkl") {
      if (!prefix.empty()) throw std::runtime_error(what + ": archive holds more than one data.pkl");
      prefix = s.substr(0, slash + 1);
    }
  }
  if (prefix.empty()) throw std::runtime_error(what + ": not a torch.save archive (no <name>/data.pkl entry)");
  if (zip_name_locate(z, (prefix + "byteorder").c_str(), 0) >= 0) {
    auto bo = read_entry(z, prefix + "byteorder", what, archive_size);
    if (std::string(bo.begin(), bo.end()) != "little")
      throw std::runtime_error(what + ": tensors are stored big-endian; only little-endian checkpoints are supported");
  }
  auto pkl = read_entry(z, prefix + "data.pkl", what, archive_size);
  auto refs = parse_state_dict_pickle(pkl.data(), pkl.size(), what);

  // Views of one storage (e.g. a slice and its base) share an entry: read each once.
  std::map<std::string, std::vector<uint8_t>> storages;
  StateDict sd;
  for (const auto& r : refs) {
    const std::string where = what + ": tensor '" + r.key + "'";
    if (r.dtype != "float32" && r.dtype != "float16" && r.dtype != "bfloat16")
      throw std::runtime_error(where + " has dtype " + r.dtype + "; only float32, float16 and bfloat16 are supported");
    const int es = dtype_elsize(r.dtype);
    auto it = storages.find(r.storage_key);
    if (it == storages.end()) {
      if (r.storage_key.find('/') != std::string::npos || r.storage_key.find("..") != std::string::npos)
        throw std::runtime_error(where + ": storage key '" + r.storage_key + "' is not a plain name");
      it = storages.emplace(r.storage_key, read_entry(z, prefix + "data/" + r.storage_key, what, archive_size)).first;
    }
    const auto& bytes = it->second;
    if (r.storage_numel > int64_t(bytes.size()) || int64_t(bytes.size()) != r.storage_numel * es)
      throw std::runtime_error(where + ": storage '" + r.storage_key + "' holds " + std::to_string(bytes.size()) +
                               " bytes, but the pickle says " + std::to_string(r.storage_numel) + " x " + r.dtype);
    int64_t numel = checked_numel(r.shape, where);
    // The last element a view touches must lie inside the storage. Overflow-checked:
    // a hostile pickle may give any 64-bit sizes, strides and offsets.
    int64_t last = r.offset;
    bool overflow = false;
    if (r.offset < 0) throw std::runtime_error(where + ": negative storage offset");
    for (size_t d = 0; d < r.shape.size() && numel > 0; ++d) {
      if (r.stride[d] < 0) throw std::runtime_error(where + ": negative stride");
      int64_t span;
      overflow |= __builtin_mul_overflow(r.shape[d] - 1, r.stride[d], &span);
      overflow |= __builtin_add_overflow(last, span, &last);
    }
    if (numel > 0 && (overflow || last >= r.storage_numel))
      throw std::runtime_error(where + ": shape " + shape_str(r.shape) + " with offset " + std::to_string(r.offset) +
                               " and strides " + shape_str(r.stride) + " reaches past the end of its storage of " +
                               std::to_string(r.storage_numel) + " elements");
    HostTensor t;
    t.shape = r.shape;
    t.src_dtype = r.dtype;
    t.data.resize(size_t(numel));
    // Row-major walk over the view: idx is the multi-index, src the storage element.
    std::vector<int64_t> idx(r.shape.size(), 0);
    int64_t src = r.offset;
    const uint8_t* b = bytes.data();
    for (int64_t k = 0; k < numel; ++k) {
      const uint8_t* e = b + src * es;
      if (es == 4) {
        std::memcpy(&t.data[size_t(k)], e, 4);
      } else {
        uint16_t h = uint16_t(e[0] | (e[1] << 8));
        t.data[size_t(k)] = r.dtype == "float16" ? half_to_float(h) : bf16_to_float(h);
      }
      for (int d = int(r.shape.size()) - 1; d >= 0; --d) {
        src += r.stride[size_t(d)];
        if (++idx[size_t(d)] < r.shape[size_t(d)]) break;
        src -= r.stride[size_t(d)] * r.shape[size_t(d)];
        idx[size_t(d)] = 0;
      }
    }
    if (!sd.emplace(r.key, std::move(t)).second) throw std::runtime_error(where + " appears twice");
  }
  return sd;
}

std::string zip_error_text(zip_error_t& e) {
  std::string s = zip_error_strerror(&e);
  zip_error_fini(&e);
  return s;
}

}  // namespace

std::vector<PthTensorRef> parse_state_dict_pickle(const uint8_t* p, size_t n, const std::string& what) {
  return PickleVM(p, n, what).run();
}

StateDict read_pth_memory(const uint8_t* data, size_t n, const std::string& what) {
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_buffer_create(data, n, 0, &err);
  if (!src) throw std::runtime_error(what + ": " + zip_error_text(err));
  zip_t* z = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (!z) {
    zip_source_free(src);
    throw std::runtime_error(what + ": not a readable PyTorch zip checkpoint: " + zip_error_text(err));
  }
  zip_error_fini(&err);
  std::unique_ptr<zip_t, ZipCloser> guard(z);
  return read_zip(z, what, n);
}

StateDict read_pth(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  if (bytes.size() >= 2 && bytes[0] == 0x80 && bytes[1] <= 0x05)
    throw std::runtime_error(path +
                             ": a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current "
                             "PyTorch (torch.save(torch.load(f), f)) to convert it");
  return read_pth_memory(bytes.data(), bytes.size(), path);
}

}  // namespace vit
