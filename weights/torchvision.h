// torchvision.models.VisionTransformer <-> vitengine ViT.
//
// The engine's parameter names ARE torchvision's state_dict keys (engine/model/vit.h
// param_table), so import is: read the file, infer or check the config from the
// shapes, check every key and shape, copy. Export is the reverse, as safetensors.
#pragma once
#include <memory>
#include <string>

#include "engine/model/vit.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "weights/state_dict.h"

namespace vit {

// Reads a .pth (PyTorch zip) or .safetensors file, chosen by content, not extension.
StateDict read_torch_weights(const std::string& path);

// Renames, in place, to torchvision's current keys: a timm VisionTransformer's (patch_embed.proj,
// cls_token, pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head;
// recognised by patch_embed.proj.weight), and older torchvision releases' mlp.linear_1 /
// mlp.linear_2 (before 0.13); the same wrapper path before every key (DistributedDataParallel's
// "module.", a Lightning module's "model.") is dropped. Throws naming the key for a timm feature the engine's ViT lacks
// (fc_norm, register tokens, layer scale, qk-norm).
void normalize_torchvision_keys(StateDict& sd);
// The model's parameters under timm's VisionTransformer keys.
StateDict timm_state_dict_from_vit(const ViT& model);

// Architecture from the shapes: dim and patch from conv_proj.weight (D, 3, P, P), image
// size from encoder.pos_embedding (1, (S/P)^2 + 1, D), depth from the layer count,
// mlp_dim from mlp.0.weight, classes from heads.head.weight. The head count is not
// visible in any shape: `heads` if > 0, else dim / 64 (torchvision's ViTs use 64-wide
// heads). Throws naming the key at fault.
ViTConfig infer_torchvision_config(const StateDict& sd, int heads = 0);

// Strict copy: every parameter of `cfg` must be present with its exact shape, and no
// other key may be present; the error lists the missing / extra / misshapen keys. Every value must be
// finite: a NaN or infinity is refused naming the tensor.
void check_state_dict(const StateDict& sd, const ViTConfig& cfg, const std::string& what);
std::unique_ptr<ViT> vit_from_state_dict(const StateDict& sd, const ViTConfig& cfg, const std::string& what);
// The model's parameters under torchvision's keys.
StateDict state_dict_from_vit(const ViT& model);

// Bicubic resampling of the position-embedding patch grid, exactly as torchvision's
// interpolate_embeddings (torch.nn.functional.interpolate, bicubic, align_corners=True,
// a = -0.75); the class-token row is kept. src (1 + gs*gs, D) -> dst (1 + gd*gd, D).
void interpolate_pos_embedding(const float* src, int src_grid, float* dst, int dst_grid, int dim);

struct ImportOptions {
  int heads = 0;        // 0: dim / 64
  int image_size = 0;   // 0: keep the checkpoint's; else interpolate position embeddings
  int num_classes = 0;  // 0: keep; else a new zero-initialised head (as torchvision's)
  float dropout = -1;   // < 0: ViTConfig's default
};
// Reads, checks and adapts a torchvision checkpoint. `source_cfg` (optional) receives
// the configuration found in the file, before adaptation. A file without a head (a backbone:
// timm's num_classes=0, MAE, DINO) needs opt.num_classes, and gets a zero-initialised head.
std::unique_ptr<ViT> import_torchvision(const std::string& path, const ImportOptions& opt,
                                        ViTConfig* source_cfg = nullptr);

// Model statistics for torchvision's ImageNet weights: the inputs they expect.
ModelMeta imagenet_meta(int num_classes);

// For `vitengine train --init FILE`: accepts .vit, .pth and .safetensors. The source
// must match `target` in patch, channels, dim, depth, mlp_dim (and heads, for .vit);
// image size and class count may differ: the position embeddings are interpolated to
// target.image_size and the head is replaced (zeros) when the class count differs or
// is kept otherwise. Returns a model with exactly `target`'s config; meta is the
// source's (.vit) or ImageNet's (torchvision files), with class_names cleared when the
// head was replaced (or added: a headless backbone gets a zero head). Throws naming both configs on a
// mismatch.
LoadedModel load_init(const std::string& path, const ViTConfig& target);

enum class KeyLayout { kTorchvision, kTimm };
// `vitengine export`: safetensors under torchvision's or timm's keys, with the config and class
// names in the metadata ("vitengine_config", "class_names" as JSON strings; "format": "pt").
void export_safetensors(const std::string& path, const ViT& model, const ModelMeta& meta,
                        SafetensorsDtype dtype = SafetensorsDtype::F32, KeyLayout layout = KeyLayout::kTorchvision);

}  // namespace vit
