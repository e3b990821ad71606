// Every `*_at` an API object carries is Unix seconds, as OpenAI's are.
export const nowSeconds = () => Math.floor(Date.now() / 1000);
