def pytest_addoption(parser):
    parser.addoption("--layers-model", default="tiny", choices=["tiny", "small", "base"],
                     help="which model's layer shapes bench/test_layers.py runs")
    parser.addoption("--layers-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
