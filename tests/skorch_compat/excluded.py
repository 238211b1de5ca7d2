"""skorch tests that do not run against the Dask classes, each with why.

Keys are pytest node ids less their parametrization
(``test_file.py::Class::test``), matched exactly: every parametrization of
a listed test is excluded with it, and no other test (the key
``test_predefined_split`` leaves ``test_predefined_split_with_y`` to run).
A key that names no test of skorch's suite stops the run (swap.py).
"""
NAME = "asserts the class's own name in a message or repr (skorch's NeuralNet*, here Dask*)"
CALLS = ("records calls made inside the module, criterion or net in a list or mock "
         "of the test's process; those calls run on the workers")
MOCK = ("patches a unittest.mock object onto the net's criterion, which does not survive "
        "pickling to the workers (and its calls would happen there)")
TABLE = ("asserts skorch's exact epoch table, printed by a PrintLog the test builds "
         "over the net's history: the Dask classes' epoch rows also hold model_updates, "
         "n_examples, batch_size, lr and n_workers (and the schedule's signal), which "
         "the plots, the dashboard and users read, and a PrintLog prints every key of "
         "a row but those skorch hides (*_best, *_batch_count)")

DEFAULTS = ("asserts skorch's exact list of default callbacks; the Dask nets add two, "
            "update_log and dashboard (dask_adadamp.callbacks.UpdateLog and "
            "DashboardFeed: each update's history record and the dashboard page), "
            "after skorch's and before the user's")

EXCLUDED = {
    # the class's name
    "test_net.py::TestNeuralNet::test_not_init_raises": NAME,
    "test_net.py::TestNeuralNet::test_not_fitted_raises": NAME,
    "test_net.py::TestNeuralNet::test_repr_uninitialized_works": NAME,
    "test_net.py::TestNeuralNet::test_repr_initialized_works": NAME,
    "test_net.py::TestNeuralNet::test_repr_fitted_works": NAME,
    "test_classifier.py::TestNeuralNet::test_pass_empty_classes_raises": NAME,
    "test_regressor.py::TestNeuralNetRegressor::test_not_init_raises": NAME,
    "test_regressor.py::TestNeuralNetRegressor::test_not_fitted_raises": NAME,
    # calls recorded in the test's process, or mocks on the net
    "test_classifier.py::TestNeuralNet::test_takes_log_with_nllloss": MOCK,
    "test_classifier.py::TestNeuralNet::test_takes_no_log_without_nllloss": MOCK,
    "test_net.py::TestNeuralNet::test_fit_params_passed_to_module": CALLS,
    "test_net.py::TestNeuralNet::test_fit_params_passed_to_module_in_pipeline": CALLS,
    "test_net.py::TestNeuralNet::test_criterion_training_set_correctly": CALLS,
    # its module appends each forward's fit parameters to a module-level list
    "test_net.py::TestMetadataRouting::test_fit_with_extra_params_and_routing": CALLS,
    "test_net.py::TestMetadataRouting::test_partial_fit_with_extra_params_and_routing": CALLS,
    "test_net.py::TestNeuralNet::test_change_get_loss": (
        "its get_loss writes to net.history, which stays on the client; the workers' "
        "copy of the net has none"),
    "test_net.py::TestNeuralNet::test_batch_size_neg_1_uses_whole_dataset": (
        "patches iterator_train with a mock DataLoader; the Dask classes refuse any "
        "iterator_train but DataLoader (batch_size=-1 itself is tested in "
        "tests/test_skorch_parity.py)"),
    "test_net.py::TestNeuralNet::test_predefined_split": (
        "patches iterator_train with a mock DataLoader, refused as above"),
    "callbacks/test_scoring.py::TestEpochScoring::test_with_caching_get_iterator_not_called": (
        "counts net.get_iterator calls; the Dask classes draw the training rows on the "
        "cluster without get_iterator"),
    "callbacks/test_scoring.py::TestScoringCacheGlobalControl::test_net_overrides_caching": (
        "counts net.infer calls in the test's process, 30 of which are the training "
        "updates' (they run on the workers); with net use_caching=True it expects "
        "cached training-set scores, which the Dask classes refuse (the workers "
        "return sums, not predictions)"),
    **dict.fromkeys([
        "callbacks/test_training.py::TestInputShapeSetter::test_no_module_reinit_when_already_correct",
        "callbacks/test_training.py::TestInputShapeSetter::test_no_module_reinit_partial_fit",
    ], (
        "patches skorch's NeuralNetClassifier.initialize_module, the swapped class's "
        "base, with the swapped class's own method, which calls it: infinite recursion "
        "(the test names skorch's class where it means net_cls)")),
    "test_net.py::TestNeuralNet::test_no_grad_during_validation": (
        "checks loss.requires_grad in a callback: the training loss comes back from the "
        "workers as a number, its graph stays there"),
    # what the Dask classes record, hold or refuse differently
    "test_net.py::TestNeuralNet::test_callback_keeps_order": DEFAULTS,
    **{f"callbacks/test_logging.py::TestPrintLog::{name}": TABLE for name in (
        "test_header", "test_lines", "test_first_row", "test_with_additional_key",
        "test_with_event_key", "test_witout_valid_data")},
    "test_net.py::TestNeuralNet::test_net_variable_label_lengths": (
        "targets of different lengths per example (an object array) cannot be placed "
        "on the workers as an array; the test also replaces get_loss and check_data "
        "on the instance, which stay on the client (the workers run the class's)"),
    "test_net.py::TestNeuralNet::test_save_load_state_cuda_intercompatibility": (
        "runs only where CUDA is; patches torch.cuda.is_available to False and expects "
        "load_params to warn and fall back to device='cpu'. device names where the "
        "workers compute: a client without CUDA keeps its copy on its CPU without a "
        "warning and keeps device='cuda' for the workers (skorch would set 'cpu', and "
        "the next fit would run on the workers' CPUs). Seen on an H200 at caee018"),
    "test_classifier.py::TestNeuralNet::test_error_when_classes_could_not_be_inferred": (
        "asserts the class's own name in skorch's message; besides, the Dask classes "
        "read y out of the Dataset (the workers need it), so classes_ is known where "
        "skorch cannot infer it"),
}
