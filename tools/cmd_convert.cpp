// vitengine convert: import a torchvision or timm ViT checkpoint (.pth or .safetensors) into
// vitengine's .vit format. Reads the file with the strict readers in weights/ (no
// Python, nothing from the file is executed), checks every key and shape, and can
// adapt the model to another input size or class count on the way.
#include <cstdio>

#include "tools/cli.h"
#include "weights/checkpoint.h"
#include "weights/torchvision.h"

namespace vit::cli {

Command register_convert(CLI::App& root) {
  struct Opts {
    std::string in, out, dtype = "f32";
    ImportOptions imp;
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("convert", "Import a torchvision or timm ViT checkpoint (.pth or .safetensors)");
  c.app
      ->add_option("input", o->in,
                   "torchvision or timm VisionTransformer state dict: torch.save zip (.pth) or .safetensors")
      ->required()
      ->check(CLI::ExistingFile);
  c.app->add_option("--out", o->out, "output model (.vit)")->required();
  c.app->add_option("--heads", o->imp.heads, "attention heads (not visible in the shapes; default dim/64)")
      ->check(CLI::PositiveNumber);
  c.app
      ->add_option("--image-size", o->imp.image_size,
                   "input size to adapt to (position embeddings are interpolated bicubically)")
      ->check(CLI::PositiveNumber);
  c.app
      ->add_option("--num-classes", o->imp.num_classes,
                   "replace the head with a zero-initialised one of this many classes")
      ->check(CLI::PositiveNumber);
  c.app->add_option("--dtype", o->dtype, "weights on disk: f32 or bf16 (half the size, for shipping)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  c.run = [o]() -> int {
    require_out_is_not_input(o->out, o->in, "checkpoint being converted");
    ViTConfig src;
    auto model = import_torchvision(o->in, o->imp, &src);
    const ViTConfig& cfg = model->config();
    // torchvision's weights expect ImageNet-normalised inputs; training on new data
    // replaces these statistics.
    ModelMeta meta = imagenet_meta(cfg.num_classes);
    meta.extra = {{"converted_from", o->in}, {"source_config", src.to_string()}};
    if (o->dtype == "bf16")
      save_model_bf16(o->out, *model, meta);
    else
      save_model(o->out, *model, meta);
    std::printf("read    %s: %s\n", o->in.c_str(), src.to_string().c_str());
    if (!cfg.same_architecture(src)) std::printf("adapted to %s\n", cfg.to_string().c_str());
    std::printf("wrote   %s: %zu parameters (%s)\n", o->out.c_str(), model->num_params(), o->dtype.c_str());
    return 0;
  };
  return c;
}

}  // namespace vit::cli
