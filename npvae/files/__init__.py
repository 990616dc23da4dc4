"""Files and formats: atomic writes (:mod:`.atomic`), output-folder checks
(:mod:`.guard`), the HDF5/MATLAB container (:mod:`.h5mat`), the checks of a model file
against its spec (:mod:`.modelcheck`) and model files themselves (:mod:`.model_file`:
``load_model``, ``save_model``)."""
