def test_put_then_get(client):
    r = client.put("/v1/stocks/AAPL", json={"price": 1})
    assert r.status_code == 201
    assert client.get("/v1/stocks/AAPL").json()["data"] == {"price": 1}
