"""What evaluate.py measures, one idea per file (evaluate.py is the flow that uses them):

    judge       the attribute classifier that reads generated images: trained on real images of
                the dataset (with the project's learning-rate schedule), cached, loaded
    scores      prompt following from {prompt: images}, diversity, the CLIP score, and what of
                each attribute survives the autoencoder
    frechet     the Frechet distance in the judge's features, next to its noise floor: one report
                for stage 1 and stage 4 alike
    report      the printed tables

The prompts come from attribute requirements (data/captions.py: single_requirements,
combined_requirements); the images from diffusion/pipeline.py's generate, as sample.py draws them.
"""
