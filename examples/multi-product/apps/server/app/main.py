import os

from fastapi import FastAPI

PRODUCT_ID = os.environ["PRODUCT_ID"]
app = FastAPI(title=os.environ.get("APP_NAME", PRODUCT_ID))


@app.get("/api/health")
def health() -> dict:
    return {"status": "ok", "product": PRODUCT_ID}


def settings() -> dict:
    # Secrets come from the product's secret file, never from the code.
    return {"clerk_secret_key": os.environ["CLERK_SECRET_KEY"]}
