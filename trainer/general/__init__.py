"""The general tagger: pretrained EfficientNet-Lite0 whose ImageNet classes map to photo-search tags."""
