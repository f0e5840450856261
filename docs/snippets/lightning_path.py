"""Train a registry model with Lightning: FusionModule + FusionDataModule in a plain Trainer."""

import tempfile

import lightning.pytorch as pl

from mmfusion.lightning import FusionDataModule, FusionModule
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset
from mmfusion.models import create_model, get_preset

root = tempfile.mkdtemp()
small = PhantomConfig(width=256, height=192, stage_prevalence=(1, 1, 1, 1, 1),
                      views_range=(2, 2), pairs_per_patient=2.0)
# or your own CSV manifest:
manifest = make_phantom_dataset(root, n_patients=10, config=small, workers=1)

preset = get_preset("liver_fibrosis_quick")  # architecture + training recipe
model = create_model("liver_fibrosis_quick", backbone="test_resnet", image_size=64)
module = FusionModule(model, training=preset.training, labels=METAVIR,  # class names
                      n_bootstrap=50)  # loss from the model's config: eq. (1)-(3)
data = FusionDataModule.from_model(  # the model's modalities and image size
    manifest, model, training=preset.training, batch_size=8, test_size=0.5,
    labels=METAVIR)  # the manifest's "stage" column: F0-F4
# use_distributed_sampler=False: the data module's sampler is already sharded
trainer = pl.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=root,
                     logger=False, enable_progress_bar=False,
                     use_distributed_sampler=False)
trainer.fit(module, datamodule=data)  # no validation split (val_size=0): no validation
trainer.test(module, datamodule=data, verbose=False)
metrics = module.metrics
accuracy = metrics["ensemble"]["accuracy"]
print(f"test accuracy {accuracy:.2f} on {metrics['n_pairs']} pairs; "
      f"per patient {metrics['patients']['accuracy']:.2f}")
model.save_pretrained(f"{root}/model")  # the trained model, whole
checkpoint = trainer.checkpoint_callback.best_model_path
restored = FusionModule.load_from_checkpoint(checkpoint)
print(f"checkpoint of epoch {restored.history[-1]['epoch']} reloaded")
