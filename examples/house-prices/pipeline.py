"""The seed's house-prices pipeline as Trellis flow steps.

Each function is a step. As in the seed, imports live inside the functions (the runner ships
each function's source as a file) and data moves between steps only through the object store
with the upstream vineyard client: ``vineyard.put(..., name=..., persist=True)`` and
``vineyard.get(name=..., fetch=True)``. Under Trellis the names are the run's own (the
runner's bootstrap maps ``"x_train"`` to ``"<run-id>/x_train"``), so runs never collide.

HOUSE_ROWS (default 600000) sets the row count; HOUSE_SEED (default 42) the random seed.
"""


def generate():
    import os

    import numpy as np
    import pandas as pd
    import vineyard

    num_rows = int(os.environ.get("HOUSE_ROWS", "600000"))
    np.random.seed(int(os.environ.get("HOUSE_SEED", "42")))
    # The seed's 46 columns and value ranges.
    df = pd.DataFrame({
        'Id': np.random.randint(1, 100000, num_rows),
        'MSSubClass': np.random.randint(20, 201, size=num_rows),
        'LotFrontage': np.random.randint(50, 151, size=num_rows),
        'LotArea': np.random.randint(5000, 20001, size=num_rows),
        'OverallQual': np.random.randint(1, 11, size=num_rows),
        'OverallCond': np.random.randint(1, 11, size=num_rows),
        'YearBuilt': np.random.randint(1900, 2022, size=num_rows),
        'YearRemodAdd': np.random.randint(1900, 2022, size=num_rows),
        'MasVnrArea': np.random.randint(0, 1001, size=num_rows),
        'BsmtFinSF1': np.random.randint(0, 2001, size=num_rows),
        'BsmtFinSF2': np.random.randint(0, 1001, size=num_rows),
        'BsmtUnfSF': np.random.randint(0, 2001, size=num_rows),
        'TotalBsmtSF': np.random.randint(0, 3001, size=num_rows),
        '1stFlrSF': np.random.randint(500, 4001, size=num_rows),
        '2ndFlrSF': np.random.randint(0, 2001, size=num_rows),
        'LowQualFinSF': np.random.randint(0, 201, size=num_rows),
        'GrLivArea': np.random.randint(600, 5001, size=num_rows),
        'BsmtFullBath': np.random.randint(0, 4, size=num_rows),
        'BsmtHalfBath': np.random.randint(0, 3, size=num_rows),
        'FullBath': np.random.randint(0, 5, size=num_rows),
        'HalfBath': np.random.randint(0, 3, size=num_rows),
        'BedroomAbvGr': np.random.randint(0, 11, size=num_rows),
        'KitchenAbvGr': np.random.randint(0, 4, size=num_rows),
        'TotRmsAbvGrd': np.random.randint(0, 16, size=num_rows),
        'Fireplaces': np.random.randint(0, 4, size=num_rows),
        'GarageYrBlt': np.random.randint(1900, 2022, size=num_rows),
        'GarageCars': np.random.randint(0, 5, num_rows),
        'GarageArea': np.random.randint(0, 1001, num_rows),
        'WoodDeckSF': np.random.randint(0, 501, num_rows),
        'OpenPorchSF': np.random.randint(0, 301, num_rows),
        'EnclosedPorch': np.random.randint(0, 201, num_rows),
        '3SsnPorch': np.random.randint(0, 101, num_rows),
        'ScreenPorch': np.random.randint(0, 201, num_rows),
        'PoolArea': np.random.randint(0, 301, num_rows),
        'MiscVal': np.random.randint(0, 5001, num_rows),
        'TotalRooms': np.random.randint(2, 11, num_rows),
        "GarageAge": np.random.randint(1, 31, num_rows),
        "RemodAge": np.random.randint(1, 31, num_rows),
        "HouseAge": np.random.randint(1, 31, num_rows),
        "TotalBath": np.random.randint(1, 5, num_rows),
        "TotalPorchSF": np.random.randint(1, 1001, num_rows),
        "TotalSF": np.random.randint(1000, 6001, num_rows),
        "TotalArea": np.random.randint(1000, 6001, num_rows),
        'MoSold': np.random.randint(1, 13, num_rows),
        'YrSold': np.random.randint(2006, 2022, num_rows),
        'SalePrice': np.random.randint(50000, 800001, num_rows),
    })
    vineyard.put(df, name="df", persist=True)


def preprocess():
    from sklearn.model_selection import train_test_split

    import vineyard

    df = vineyard.get(name="df", fetch=True)

    # Preprocess Data (the seed's filter and 80/20 split)
    df = df.drop(df[(df['GrLivArea'] > 4800)].index)
    X = df.drop('SalePrice', axis=1)  # Features
    y = df['SalePrice']  # Target variable
    del df

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    del X, y

    vineyard.put(X_train, name="x_train", persist=True)
    vineyard.put(X_test, name="x_test", persist=True)
    vineyard.put(y_train, name="y_train", persist=True)
    vineyard.put(y_test, name="y_test", persist=True)


def train():
    from sklearn.linear_model import LinearRegression

    import vineyard

    x_train_data = vineyard.get(name="x_train", fetch=True)
    y_train_data = vineyard.get(name="y_train", fetch=True)

    model = LinearRegression()
    model.fit(x_train_data, y_train_data)

    # The seed wrote the model to a file with joblib; here it goes through the store too.
    vineyard.put(model, name="model", persist=True)


def test():
    from sklearn.metrics import mean_squared_error

    import vineyard

    x_test_data = vineyard.get(name="x_test", fetch=True)
    y_test_data = vineyard.get(name="y_test", fetch=True)
    model = vineyard.get(name="model", fetch=True)

    y_pred = model.predict(x_test_data)
    err = mean_squared_error(y_test_data, y_pred)
    print("MSE: %.6f" % err)
