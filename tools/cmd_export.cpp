// vitengine export: a vitengine model as safetensors under torchvision's or timm's state_dict
// keys, so that PyTorch users can load it into torchvision.models.VisionTransformer (or
// vit_b_16) or timm's VisionTransformer with load_state_dict. See docs/weights.md.
#include <cstdio>

#include "tools/cli.h"
#include "weights/checkpoint.h"
#include "weights/torchvision.h"

namespace vit::cli {

Command register_export(CLI::App& root) {
  struct Opts {
    std::string in, out, dtype = "f32", format = "torchvision";
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("export", "Export a vitengine model as torchvision or timm safetensors");
  c.app->add_option("model", o->in, "vitengine model (.vit)")->required()->check(CLI::ExistingFile);
  c.app->add_option("--out", o->out, "output file (.safetensors)")->required();
  c.app->add_option("--dtype", o->dtype, "f32 (exact), f16 or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  c.app->add_option("--format", o->format, "state_dict keys: torchvision or timm")
      ->check(CLI::IsMember({"torchvision", "timm"}))
      ->capture_default_str();
  c.run = [o]() -> int {
    require_out_is_not_input(o->out, o->in, "model being exported");
    LoadedModel lm = load_model(o->in);
    const bool timm = o->format == "timm";
    export_safetensors(o->out, *lm.model, lm.meta, parse_safetensors_dtype(o->dtype),
                       timm ? KeyLayout::kTimm : KeyLayout::kTorchvision);
    const ViTConfig& c = lm.model->config();
    std::printf("wrote %s: %s, %s, %s keys\n", o->out.c_str(), c.to_string().c_str(), o->dtype.c_str(),
                o->format.c_str());
    if (timm)
      std::printf(
          "PyTorch: timm.models.vision_transformer.VisionTransformer(img_size=%d, patch_size=%d, embed_dim=%d, "
          "depth=%d, num_heads=%d, mlp_ratio=%g, num_classes=%d).load_state_dict(safetensors.torch.load_file(...))\n",
          c.image_size, c.patch, c.dim, c.depth, c.heads, double(c.mlp_dim) / c.dim, c.num_classes);
    else
      std::printf(
          "PyTorch: torchvision.models.VisionTransformer(image_size=%d, patch_size=%d, num_layers=%d, num_heads=%d, "
          "hidden_dim=%d, mlp_dim=%d, num_classes=%d).load_state_dict(state_dict)\n",
          c.image_size, c.patch, c.depth, c.heads, c.dim, c.mlp_dim, c.num_classes);
    return 0;
  };
  return c;
}

}  // namespace vit::cli
